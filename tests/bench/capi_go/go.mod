module capibench

go 1.18

require vene v0.0.0

replace vene => ../../../bindings/go
