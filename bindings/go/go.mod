module github.com/vene-project/vene/bindings/go

go 1.18
