module github.com/tryvox/libtryvox/bindings/go

go 1.19
