module capibench

go 1.18

require github.com/vene-project/vene/bindings/go v0.0.0

replace github.com/vene-project/vene/bindings/go => ../../../bindings/go
