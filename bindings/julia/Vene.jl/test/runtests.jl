# Tests of Vene.jl on the repository's tiny random-weight Llama fixture (2 layers, hidden 32,
# vocab 96). Run from the repository root after `cargo build --release`:
#   julia --project=bindings/julia/Vene.jl -e 'using Pkg; Pkg.test()'
using Test
using Vene

const FIXTURE = joinpath(@__DIR__, "..", "..", "..", "..", "tests", "fixtures", "hf", "llama")
const VANILLA = """[{"layer": 0, "component": "block_output", "intervention_type": "vanilla"}]"""

standard(; kw...) = (base=[1, 2, 3, 4], sources=[[5, 6, 7, 8]], locations=[Vene.at(1)], kw...)

@testset "Vene.jl" begin
    @test Vene.abi_version() == Vene.ABI_VERSION
    @test !isempty(Vene.version())

    @testset "model" begin
        e = try Vene.load_model("/no/such/model"); nothing catch err; err end
        @test e isa VeneError && e.status == :io && occursin("/no/such/model", e.message)
        e = try Vene.load_model(FIXTURE; device="gpu"); nothing catch err; err end
        @test e isa VeneError && occursin("opts->device: unknown device 'gpu'", e.message)
        q = Vene.load_model(FIXTURE; weights="q8_0", device="cpu")
        @test Vene.info(q).model_type == "llama"
        close(q)
        m = Vene.load_model(FIXTURE)
        i = Vene.info(m)
        @test i.model_type == "llama" && i.n_layers == 2 && i.vocab_size == 96 && i.bos_id == 1
        s = Vene.sites(m)
        @test length(s) == 16 && s[1].component == "block_input" && s[1].dim == 32
        @test_throws VeneError Vene.tokenize(m, "no tokenizer here")
        close(m); close(m)                       # idempotent
        @test_throws VeneError Vene.info(m)
    end

    m = Vene.load_model(FIXTURE)

    @testset "typed run equals JSON run" begin
        iv = Vene.Intervenable(m, VANILLA)
        @test Vene.counts(iv) == (1, 1)
        r = Vene.run(iv; standard(output_original=true)...)
        j = run_json(iv, """{"base": {"input_ids": [[1, 2, 3, 4]]},
            "sources": [{"input_ids": [[5, 6, 7, 8]]}], "unit_locations": {"sources->base": 1}}""")
        a = tensor(r, "intervened.logits")
        @test size(a) == (1, 4, 96)
        @test a == tensor(j, "intervened.logits")
        o = tensor(r, "original.logits")
        @test a[1, 1, :] == o[1, 1, :]           # before the intervened position
        @test a[1, 2, :] != o[1, 2, :]           # at it
        @test tensor_names(r) == ["original.logits", "intervened.logits", "intervened.last_hidden_state"]
        e = try tensor(r, "nope"); nothing catch err; err end
        @test e isa VeneError && e.status == :not_found
        close(r)
        @test_throws VeneError tensor(r, "intervened.logits")
    end

    @testset "errors" begin
        e = try Vene.Intervenable(m, """[{"layer": 9, "component": "block_output"}]"""); nothing catch err; err end
        @test e isa VeneError && e.status == :invalid_input && occursin("layer 9", e.message)
        iv = Vene.Intervenable(m, VANILLA)
        e = try Vene.run(iv; standard(locations=[Vene.at(1), Vene.at(1)])...); nothing catch err; err end
        @test e isa VeneError && occursin("2 entries", e.message)
        e = try Vene.run(iv; standard(base=[1, 200])...); nothing catch err; err end
        @test e isa VeneError && occursin("200", e.message)
    end

    @testset "generate" begin
        iv = Vene.Intervenable(m, VANILLA)
        loc = Vene.Location(Vene.Units([3]), Vene.Units([0]))
        g = Vene.generate(iv; base=[1, 2, 3, 4], sources=[[5, 6, 7, 8]], locations=[loc],
                          max_new_tokens=5, ignore_eos=true)
        x = ids(g)
        @test size(x) == (1, 9) && x[1, 1:4] == [1, 2, 3, 4]
    end

    @testset "Julia functions as interventions" begin
        calls = Ref(0)
        register_intervention("julia", "copy") do out, base, source
            calls[] += 1
            out .= source
        end
        want = tensor(Vene.run(Vene.Intervenable(m, VANILLA); standard()...), "intervened.logits")
        iv = Vene.Intervenable(m, """[{"layer": 0, "component": "block_output", "intervention_type": "julia/copy"}]""")
        @test tensor(Vene.run(iv; standard()...), "intervened.logits") == want
        @test calls[] == 1
        register_intervention("julia", "fail"; flags=Vene.NO_SOURCE) do out, base, source
            error("refused by Julia")
        end
        bad = Vene.Intervenable(m, """[{"layer": 1, "component": "mlp_output", "intervention_type": "julia/fail"}]""")
        e = try Vene.run(bad; base=[1, 2, 3]); nothing catch err; err end
        @test e isa VeneError && occursin("refused by Julia", e.message)
        unregister_intervention("julia/fail")
        @test_throws VeneError unregister_intervention("julia/fail")
    end

    @testset "training" begin
        iv = Vene.Intervenable(m, """[{"layer": 1, "component": "block_output",
            "intervention_type": "low_rank_rotated_space", "low_rank_dimension": 4}]""")
        jsonl = join(["""{"base": [$(3 + i), 10, 20, 30], "sources": [[$(40 + i), 50, 60, 70]], "locations": [[3]], "labels": [7]}"""
                      for i in 0:7], "\n")
        ds = Vene.parse_dataset(jsonl)
        @test length(ds) == 8
        before = Vene.evaluate(iv, ds)
        steps = Ref(0)
        r = Vene.train!(iv, ds; epochs=15, batch_size=4, lr=5e-2, warmup_ratio=0.0,
                        progress=p -> (steps[] = p.step; true))
        @test r.completed && r.steps == 30 && steps[] == 30
        @test Vene.evaluate(iv, ds).loss < before.loss
        r = Vene.train!(iv, ds; epochs=15, batch_size=4, progress=p -> p.step < 2)
        @test !r.completed && r.steps == 2
        dir = joinpath(mktempdir(), "knob")
        Vene.save_knob(iv, dir)
        again = Vene.load_knob(m, dir)
        req = (base=[3, 10, 20, 30], sources=[[40, 50, 60, 70]], locations=[Vene.at(3)])
        @test tensor(Vene.run(iv; req...), "intervened.logits") == tensor(Vene.run(again; req...), "intervened.logits")
    end

    @testset "threads share one model" begin
        cfg = """[{"layer": 1, "component": "block_output", "intervention_type": "vanilla"}]"""
        req(k) = (base=[1 + k, 2, 3, 4], sources=[[9, 10 + k, 11, 12]], locations=[Vene.at(k % 4)])
        serial = [tensor(Vene.run(Vene.Intervenable(m, cfg); req(k)...), "intervened.logits") for k in 0:7]
        results = Vector{Any}(undef, 8)
        Threads.@threads for k in 0:7
            results[k + 1] = tensor(Vene.run(Vene.Intervenable(m, cfg); req(k)...), "intervened.logits")
        end
        @test all(results[k + 1] == serial[k + 1] for k in 0:7)
    end

    @testset "top-k, log sink, plugin hint" begin
        iv = Vene.Intervenable(m, VANILLA)
        r = Vene.run(iv; standard()...)
        row = tensor(r, "intervened.logits")[1, 3, :]      # position 2 (0-based)
        order = sortperm(row; rev=true)
        p = exp.(Float64.(row) .- maximum(row)); p ./= sum(p)
        for pos in (2, -2)
            t = top_k(r, 5; position=pos)
            @test [x.id for x in t] == order[1:5] .- 1      # ids are 0-based
            @test all(abs(t[i].prob - p[order[i]]) < 1e-6 for i in 1:5)
        end
        e = try top_k(r, 5; position=4); nothing catch err; err end
        @test e isa VeneError && e.status == :not_found
        @test_throws VeneError token_text(m, 5)             # the fixture has no tokenizer

        Vene.load_plugin(joinpath(@__DIR__, "..", "..", "..", "..", "tests", "fixtures", "plugins", "log_wat.wat"))
        logged = String[]
        Vene.set_log_sink((level, who, msg) -> level == Vene.LOG_INFO && push!(logged, msg))
        Vene.set_log_level(Vene.LOG_INFO)
        w = Vene.Intervenable(m, """[{"layer": 0, "component": "block_output", "intervention_type": "wasm/log_wat"}]""")
        Vene.run(w; base=[1, 2, 3, 4])
        @test !isempty(logged) && logged[end] == "hello from wasm"
        Vene.set_log_sink(nothing)
        Vene.set_log_level(-1)

        e = try Vene.Intervenable(m, """[{"layer": 0, "component": "block_output", "intervention_type": "nowhere/x"}]"""); nothing catch err; err end
        @test e isa VeneError && occursin("vene_plugin_load", e.message)
    end
end
