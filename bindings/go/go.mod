module vene

go 1.18
