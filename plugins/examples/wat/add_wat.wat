;; A hand-written vene WASM module: out = base + source, pyvene's AdditionIntervention.
;; vene loads .wat text directly; it registers as wasm/add_wat.
(module
  (import "vene" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "add_wat needs a source")

  (func (export "vene_abi_version") (result i32) (i32.const 1))
  ;; VENE_TYPE_ROW_WISE: each output row depends only on the same input rows.
  (func (export "vene_flags") (result i32) (i32.const 4))

  ;; Buffers on fresh pages: returns the old end of memory, or 0 when it cannot grow.
  (func (export "vene_alloc") (param $size i32) (result i32)
    (local $old i32)
    (local.set $old
      (memory.grow (i32.shr_u (i32.add (local.get $size) (i32.const 65535)) (i32.const 16))))
    (if (result i32) (i32.eq (local.get $old) (i32.const -1))
      (then (i32.const 0))
      (else (i32.shl (local.get $old) (i32.const 16)))))

  (func (export "vene_intervene")
        (param $base i32) (param $source i32) (param $out i32) (param $rows i32) (param $dim i32)
        (result i32)
    (local $end i32)
    (if (i32.eqz (local.get $source))
      (then (call $log (i32.const 16) (i32.const 22)) (return (i32.const 1))))
    ;; $end = $out + 4 * rows * dim; walk the three buffers together.
    (local.set $end
      (i32.add (local.get $out)
        (i32.shl (i32.mul (local.get $rows) (local.get $dim)) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
        (f32.store (local.get $out)
          (f32.add (f32.load (local.get $base)) (f32.load (local.get $source))))
        (local.set $base (i32.add (local.get $base) (i32.const 4)))
        (local.set $source (i32.add (local.get $source) (i32.const 4)))
        (local.set $out (i32.add (local.get $out) (i32.const 4)))
        (br $next)))
    (i32.const 0)))
