package vene_test

import (
	"fmt"

	vene "github.com/vene-project/vene/bindings/go"
)

// Interchange intervention on the tiny test model: position 1 of the base takes the source's
// residual stream after layer 0, which changes the logits from position 1 on.
func Example() {
	m, err := vene.LoadModel("../../tests/fixtures/hf/llama")
	if err != nil {
		panic(err)
	}
	defer m.Close()
	iv, err := vene.NewIntervenable(m, `[{"layer": 0, "component": "block_output"}]`)
	if err != nil {
		panic(err)
	}
	defer iv.Close()
	res, err := iv.Run(&vene.Request{
		Base:           vene.Tokens(1, 2, 3, 4),
		Sources:        []*vene.Input{vene.Tokens(5, 6, 7, 8)},
		Locations:      []vene.Location{vene.At(1)},
		OutputOriginal: true,
	})
	if err != nil {
		panic(err)
	}
	defer res.Close()
	after, _ := res.Tensor("intervened.logits")
	before, _ := res.Tensor("original.logits")
	fmt.Println("shape", after.Shape)
	fmt.Println("position 0 unchanged:", after.Data[0] == before.Data[0])
	fmt.Println("position 1 changed:", after.Data[96] != before.Data[96])
	// Output:
	// shape [1 4 96]
	// position 0 unchanged: true
	// position 1 changed: true
}
