"""The swap/drop engine on tiny random models of every family: invariants and an independent check."""

import pytest
import torch

from vfl.errors import VflError
from vfl.interventions import (Intervention, check_pair, controls, drop_sweep, layer_windows, narrowed, prefill,
                               prefill_pair, swap_answers, swap_logprobs, swap_sweep, swap_visual_hidden, swap_visual_kv,
                               sweep_interventions)
from vfl.models import adapter_for
from vfl.models.tiny import FAMILIES, build_tiny
from vfl.probes.generate import make_pair

NEW = 6


def generate(adapter, prompt, new=NEW):
    """The reference: transformers' own greedy `generate` on the full prompt, where it stops (one row: no
    padding after its end token), knowing nothing of vfl's own end tokens."""
    extra = dict(prompt.token_inputs)
    if adapter.family in ("qwen2_vl", "qwen3_vl"):
        extra["mm_token_type_ids"] = (prompt.input_ids == adapter.image_token_id).int()
    out = adapter.model.generate(input_ids=prompt.input_ids, attention_mask=torch.ones_like(prompt.input_ids),
                                 **prompt.image_inputs, **extra, max_new_tokens=new, do_sample=False)
    return out[0, prompt.input_ids.shape[1]:].tolist()


def prompts(adapter, index, function="count"):
    question, image_a, image_b, *_ = make_pair(function, index, 32, 0)
    return adapter.build_prompt(image_a, question), adapter.build_prompt(image_b, question)


@pytest.mark.parametrize("family", FAMILIES)
def test_no_swap_gives_a_and_all_layers_give_b(adapters, family):
    adapter = adapters(family)
    differing = 0
    for index in range(6):
        prompt_a, prompt_b = prompts(adapter, index)
        check_pair("p", prompt_a, prompt_b)
        ref_a, ref_b = generate(adapter, prompt_a), generate(adapter, prompt_b)
        none, every = swap_sweep(adapter, prompt_a, prompt_b, controls(adapter.num_layers), NEW)
        assert none == ref_a
        assert every == ref_b
        differing += ref_a != ref_b
    assert differing > 0, "no pair gave different answers, so the invariants were not tested"


@pytest.mark.parametrize("family", FAMILIES)
def test_decoding_stops_where_generate_stops_when_tokenizer_and_generation_config_disagree(family):
    """The tokenizer's and the text config's end token is one the model emits early; the generation config lists
    another, never emitted: `generate` runs on past the first, and so must vfl (tiny Qwen2.5-VL once stopped at
    its tokenizer's end token, cutting answers short)."""
    model, processor = build_tiny(family, dtype=torch.float64)
    adapter = adapter_for(model, processor)
    prompt_a, prompt_b = prompts(adapter, 0)
    model.generation_config.eos_token_id = None
    free = generate(adapter, prompt_a, 2 * NEW)
    emitted = free[1]
    never = next(t for t in range(len(adapter.tokenizer)) if t not in free)
    adapter.tokenizer.eos_token = adapter.tokenizer.convert_ids_to_tokens(emitted)
    adapter.text_config.eos_token_id = emitted
    model.generation_config.eos_token_id = never
    adapter = adapter_for(model, processor)
    assert adapter.eos_token_ids == {never}
    none, every = swap_sweep(adapter, prompt_a, prompt_b, controls(adapter.num_layers), 2 * NEW)
    assert none == generate(adapter, prompt_a, 2 * NEW) == free
    assert every == generate(adapter, prompt_b, 2 * NEW)
    assert len(none) > 2  # it went on past the tokenizer's end token


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_rows_equal_one_run_per_intervention(adapters, family):
    adapter = adapters(family)
    prompt_a, prompt_b = prompts(adapter, 1)
    interventions = controls(adapter.num_layers) + layer_windows(adapter.num_layers, 2)
    batched = swap_sweep(adapter, prompt_a, prompt_b, interventions, NEW)
    assert [swap_sweep(adapter, prompt_a, prompt_b, [i], NEW)[0] for i in interventions] == batched
    assert swap_sweep(adapter, prompt_a, prompt_b, interventions, NEW, batch_size=2) == batched


def _hooked_generate(adapter, prompt_a, prompt_b, layer, projections=("k_proj", "v_proj"), heads=None, tokens=None):
    """Swap by another route, with forward hooks during a plain `generate` of A's full prompt:
    layer k's k_proj/v_proj outputs at the visual rows are B's (RoPE comes after, at equal positions),
    and the visual rows leaving every layer >= k are reset to A's clean ones, since the intervention
    changes what later tokens read, not the visual tokens' own states. ``projections``, ``heads`` (slices
    of the projection's output) and ``tokens`` (offsets into the visual rows) narrow the swap."""
    layers = adapter.language_model.layers
    attention = layers[layer].self_attn
    start, end = prompt_a.visual_span
    length = prompt_a.input_ids.shape[1]
    captured = {}

    def hidden(output):
        return output[0] if isinstance(output, tuple) else output

    def capture(name):
        def hook(module, args, output):
            if hidden(output).shape[1] == length:  # the prefill, not a decoding step
                captured[name] = hidden(output)[:, start:end].clone()
        return hook

    def replace(name):
        def hook(module, args, output):
            if hidden(output).shape[1] != length:
                return output
            states = hidden(output).clone()
            if name.startswith("layer"):
                states[:, start:end] = captured[name]
                return (states, *output[1:]) if isinstance(output, tuple) else states
            rows = torch.tensor(range(end - start) if tokens is None else tokens)
            width = adapter.text_config.head_dim if getattr(adapter.text_config, "head_dim", None) else \
                adapter.text_config.hidden_size // adapter.text_config.num_attention_heads
            columns = torch.cat([torch.arange(h * width, (h + 1) * width)
                                 for h in (range(adapter.num_kv_heads) if heads is None else heads)])
            states[:, start + rows.view(-1, 1), columns.view(1, -1)] = captured[name][:, rows.view(-1, 1),
                                                                                     columns.view(1, -1)]
            return states
        return hook

    def hooked(modules, make, prompt):
        handles = [module.register_forward_hook(make(name)) for name, module in modules]
        try:
            return generate(adapter, prompt)
        finally:
            for handle in handles:
                handle.remove()

    projections = [(name, getattr(attention, name)) for name in projections]
    later = [(f"layer{j}", layers[j]) for j in range(layer, len(layers))]
    hooked(projections, capture, prompt_b)
    hooked(later, capture, prompt_a)
    return hooked(projections + later, replace, prompt_a)


@pytest.mark.parametrize("family", FAMILIES)
def test_single_layer_swap_matches_an_independent_hook_implementation(adapters, family):
    adapter = adapters(family)
    changed = 0
    for index in range(4):
        prompt_a, prompt_b = prompts(adapter, index)
        swept = swap_sweep(adapter, prompt_a, prompt_b, layer_windows(adapter.num_layers), NEW)
        for layer in range(adapter.num_layers):
            assert swept[layer] == _hooked_generate(adapter, prompt_a, prompt_b, layer)
        changed += any(row != swept[0] for row in swept)
    assert changed, "swapping never changed an answer, so the comparison was vacuous"


def test_swap_leaves_the_source_caches_untouched(adapters):
    adapter = adapters("llava")
    prompt_a, prompt_b = prompts(adapter, 0)
    cache_a, cache_b = prefill(adapter, prompt_a), prefill(adapter, prompt_b)
    before = [(layer.keys.clone(), layer.values.clone()) for layer in cache_a.layers]
    batched = swap_visual_kv(cache_a, cache_b, prompt_a.visual_span,
                             [Intervention("x", (1,)), Intervention("y", ())], adapter.model.config)
    for (keys, values), layer in zip(before, cache_a.layers):
        assert torch.equal(keys, layer.keys) and torch.equal(values, layer.values)
    start, end = prompt_a.visual_span
    assert torch.equal(batched.layers[1].keys[0, :, start:end], cache_b.layers[1].keys[0, :, start:end])
    assert torch.equal(batched.layers[1].keys[1], cache_a.layers[1].keys[0])
    assert torch.equal(batched.layers[0].keys[0], cache_a.layers[0].keys[0])
    assert not torch.equal(cache_a.layers[1].keys, cache_b.layers[1].keys)


@pytest.mark.parametrize("family", FAMILIES)
def test_drop_nothing_is_plain_and_drop_everything_makes_the_image_invisible(adapters, family):
    adapter = adapters(family)
    for index in range(3):
        prompt_a, prompt_b = prompts(adapter, index)
        none_a, all_a = drop_sweep(adapter, prompt_a, controls(adapter.num_layers), NEW)
        none_b, all_b = drop_sweep(adapter, prompt_b, controls(adapter.num_layers), NEW)
        assert none_a == generate(adapter, prompt_a)
        assert all_a == all_b
    # the attention implementation is restored afterwards
    assert adapter.language_model.config._attn_implementation != "vfl_sdpa"


def test_drop_at_one_layer_changes_only_what_reads_that_layer(adapters):
    adapter = adapters("llava")
    prompt_a, _ = prompts(adapter, 2)
    rows = drop_sweep(adapter, prompt_a, controls(adapter.num_layers) + layer_windows(adapter.num_layers), NEW)
    assert rows[0] == generate(adapter, prompt_a)
    assert any(row != rows[0] for row in rows[2:]), "dropping single layers never mattered: vacuous"


def test_pairs_with_different_layouts_are_refused(adapters):
    adapter = adapters("qwen2_vl")
    question, image_a, _, *_ = make_pair("count", 0, 32, 0)
    prompt_a = adapter.build_prompt(image_a, question)
    prompt_b = adapter.build_prompt(image_a.resize((32, 96)), question)  # another aspect ratio, another grid
    with pytest.raises(VflError, match="probe p7: images A and B give different visual token layouts"):
        check_pair("p7", prompt_a, prompt_b)


def generated_logprob(adapter, prompt, tokens):
    """The reference: the log-probability of ``tokens`` from `generate`'s own logits (greedy, so the
    generated tokens are these)."""
    extra = dict(prompt.token_inputs)
    if adapter.family in ("qwen2_vl", "qwen3_vl"):
        extra["mm_token_type_ids"] = (prompt.input_ids == adapter.image_token_id).int()
    out = adapter.model.generate(input_ids=prompt.input_ids, attention_mask=torch.ones_like(prompt.input_ids),
                                 **prompt.image_inputs, **extra, max_new_tokens=len(tokens), do_sample=False,
                                 output_logits=True, return_dict_in_generate=True)
    return sum(torch.log_softmax(step[0].double(), -1)[t].item() for step, t in zip(out.logits, tokens))


@pytest.mark.parametrize("family, what", [(f, "kv") for f in FAMILIES] +
                         [(f, "hidden") for f in ("llava", "qwen3_vl", "gemma3")])
def test_teacher_forced_logprobs_equal_generates_own(adapters, family, what):
    """No swap scores A's answer as `generate` does on A, every layer (for hidden rows: patching from layer 0)
    scores B's as on B; each row's cache and suffix are computed once and repeated per answer, so batching
    changes nothing."""
    adapter = adapters(family)
    prompt_a, prompt_b = prompts(adapter, 2)
    rows = narrowed(controls(adapter.num_layers) + layer_windows(adapter.num_layers), what)
    none, every = swap_sweep(adapter, prompt_a, prompt_b, rows[:2], NEW)
    logprobs = swap_logprobs(adapter, prompt_a, prompt_b, rows, [none, every])
    assert logprobs[0][0] == pytest.approx(generated_logprob(adapter, prompt_a, none), rel=1e-5)
    assert logprobs[1][1] == pytest.approx(generated_logprob(adapter, prompt_b, every), rel=1e-5)
    # batching rows and answers together changes nothing
    one_at_a_time = swap_logprobs(adapter, prompt_a, prompt_b, rows, [none, every], batch_size=1)
    assert sum(one_at_a_time, []) == pytest.approx(sum(logprobs, []), rel=1e-9)
    assert all(len(row) == 2 for row in logprobs)
    # nor does scoring an answer beside a longer one (its padding stays out of the sum), or one token long
    assert len(every) > 2
    mixed = swap_logprobs(adapter, prompt_a, prompt_b, rows, [none[:2], every])
    assert [row[1] for row in mixed] == pytest.approx([row[1] for row in logprobs], rel=1e-9)
    alone = swap_logprobs(adapter, prompt_a, prompt_b, rows, [none[:2]])
    assert [row[0] for row in mixed] == pytest.approx([row[0] for row in alone], rel=1e-9)
    assert mixed[0][0] == pytest.approx(generated_logprob(adapter, prompt_a, none[:2]), rel=1e-5)
    first = swap_logprobs(adapter, prompt_a, prompt_b, rows[:1], [none[:1]])
    assert first[0][0] == pytest.approx(generated_logprob(adapter, prompt_a, none[:1]), rel=1e-5)


@pytest.mark.parametrize("family, what", [(f, "kv") for f in FAMILIES] + [("llava", "hidden")])
def test_swap_answers_equal_decoding_then_scoring(adapters, family, what):
    """`swap_answers` (one suffix per row for decode and scores, a row's own answer scored by its decode) gives
    `swap_sweep`'s answers and `swap_logprobs`' scores of the controls' answers, in any batching: rows whose
    answer is A's, B's or neither, and, in batches of one, rows decoded before B's answer was known."""
    adapter = adapters(family)
    kinds = set()
    for index in range(3):
        prompt_a, prompt_b = prompts(adapter, index)
        rows = controls(adapter.num_layers) + narrowed(layer_windows(adapter.num_layers), what)
        expected = swap_sweep(adapter, prompt_a, prompt_b, rows, NEW)
        expected_logprobs = swap_logprobs(adapter, prompt_a, prompt_b, rows, expected[:2])
        for batch_size in (None, 1, 2):
            tokens, logprobs = swap_answers(adapter, prompt_a, prompt_b, rows, NEW, batch_size)
            assert tokens == expected
            assert sum(logprobs, []) == pytest.approx(sum(expected_logprobs, []), rel=1e-6, abs=1e-9)
        kinds |= {"a" if t == expected[0] else "b" if t == expected[1] else "other" for t in expected[2:]}
    assert "a" in kinds and len(kinds) > 1, kinds  # own-answer scores and teacher-forced A's answer both used


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_cumulative_sweeps_reach_both_controls(adapters, family):
    """Swapping from layer 0 on, or up to the last layer, is swapping every layer: B's answer; the
    intervention lists are what their names say."""
    adapter = adapters(family)
    layers = adapter.num_layers
    starting = sweep_interventions(layers, "from")
    ending = sweep_interventions(layers, "upto")
    assert [i.layers for i in starting] == [tuple(range(k, layers)) for k in range(layers)]
    assert [i.layers for i in ending] == [tuple(range(k + 1)) for k in range(layers)]
    for index in range(3):
        prompt_a, prompt_b = prompts(adapter, index)
        none, every, first, last = swap_sweep(adapter, prompt_a, prompt_b,
                                              controls(layers) + [starting[0], ending[-1]], NEW)
        assert first == every and last == every
    with pytest.raises(VflError, match="--window applies to --sweep window only"):
        sweep_interventions(layers, "from", window=2)
    with pytest.raises(VflError, match="unknown --sweep"):
        sweep_interventions(layers, "middle")


NARROW = {"keys only": dict(what="k"), "values only": dict(what="v"), "one head": dict(heads=[1]),
          "some tokens": dict(tokens=[0, 2, 3]), "values of one head at some tokens": dict(what="v", heads=[0], tokens=[1, 3])}


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "idefics3"])
@pytest.mark.parametrize("case", NARROW)
def test_narrowed_swaps_match_the_hook_implementation(adapters, family, case):
    """Keys or values only, chosen key/value heads, chosen visual tokens: the cache swap gives what the
    independent hook route gives when it replaces only those projection outputs."""
    adapter = adapters(family)
    options = NARROW[case]
    projections = {"kv": ("k_proj", "v_proj"), "k": ("k_proj",), "v": ("v_proj",)}[options.get("what", "kv")]
    changed = 0
    for index in range(6):
        prompt_a, prompt_b = prompts(adapter, index)
        rows = narrowed(layer_windows(adapter.num_layers), **options)
        swept = swap_sweep(adapter, prompt_a, prompt_b, rows, NEW)
        for layer in range(adapter.num_layers):
            assert swept[layer] == _hooked_generate(adapter, prompt_a, prompt_b, layer, projections,
                                                    options.get("heads"), options.get("tokens")), (index, layer)
        changed += any(row != generate(adapter, prompt_a) for row in swept)
    assert changed, "no narrowed swap changed an answer, so the comparison was vacuous"


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_state_swaps_reach_b_from_the_first_layer_and_match_a_hook_route(adapters, family):
    """Patching the visual positions' residual stream entering every layer, or only layer 0, is B's whole
    run; patching one later layer equals `generate` with a pre-hook that does the same."""
    adapter = adapters(family)
    layers = adapter.language_model.layers
    for index in range(3):
        prompt_a, prompt_b = prompts(adapter, index)
        rows = narrowed(controls(adapter.num_layers)[1:] + layer_windows(adapter.num_layers), "hidden")
        swept = swap_sweep(adapter, prompt_a, prompt_b, rows, NEW)
        reference_b = generate(adapter, prompt_b)
        assert swept[0] == reference_b and swept[1] == reference_b
        start, end = prompt_a.visual_span
        length = prompt_a.input_ids.shape[1]
        k = adapter.num_layers - 1
        kept = {}

        def keep(module, args, kwargs):
            states = args[0] if args else kwargs["hidden_states"]
            if states.shape[1] == length:
                kept["b"] = states[:, start:end].clone()

        def put(module, args, kwargs):
            states = args[0] if args else kwargs["hidden_states"]
            if states.shape[1] != length:
                return None
            states = states.clone()
            states[:, start:end] = kept["b"]
            return ((states, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": states})

        handle = layers[k].register_forward_pre_hook(keep, with_kwargs=True)
        generate(adapter, prompt_b)
        handle.remove()
        handle = layers[k].register_forward_pre_hook(put, with_kwargs=True)
        try:
            assert swept[1 + k] == generate(adapter, prompt_a)
        finally:
            handle.remove()


def test_narrowing_is_checked(adapters):
    adapter = adapters("llava")
    prompt_a, prompt_b = prompts(adapter, 0)
    with pytest.raises(VflError, match="head 5 does not exist"):
        swap_sweep(adapter, prompt_a, prompt_b, narrowed(layer_windows(adapter.num_layers), heads=[5]), NEW)
    with pytest.raises(VflError, match="visual token 99 does not exist"):
        swap_sweep(adapter, prompt_a, prompt_b, narrowed(layer_windows(adapter.num_layers), tokens=[99]), NEW)
    with pytest.raises(VflError, match="--heads applies to key/value swaps"):
        narrowed(layer_windows(4), "hidden", heads=[0])
    with pytest.raises(VflError, match="unknown --what"):
        narrowed(layer_windows(4), "q")
    heads = sweep_interventions(4, "heads", layers=[1, 2], num_heads=2)
    assert [(i.name, i.layers, i.heads) for i in heads] == [("head 0", (1, 2), (0,)), ("head 1", (1, 2), (1,))]
    with pytest.raises(VflError, match="--sweep heads needs --layers"):
        sweep_interventions(4, "heads", num_heads=2)


def test_qwen3_vl_hidden_swaps_carry_b_deepstack_features_unless_kept(adapters):
    """Qwen3-VL adds vision features to the visual positions after its first layers (DeepStack). A
    hidden-state swap from layer 0 puts B's there too, so the whole cache is B's; keeping A's leaves
    A in the later layers."""
    adapter = adapters("qwen3_vl")
    prompt_a, prompt_b = prompts(adapter, 0)
    pair = prefill_pair(adapter, prompt_a, prompt_b, hidden=True)
    assert len(pair.injected_b) == 2  # one per vision layer of the tiny model
    start, end = prompt_a.visual_span
    swapped = swap_visual_hidden(adapter, prompt_a, pair, narrowed([Intervention("x", (0,))], "hidden"))
    kept = swap_visual_hidden(adapter, prompt_a, pair, narrowed([Intervention("x", (0,))], "hidden", keep_injected=True))
    for layer in range(adapter.num_layers):
        assert torch.allclose(swapped.layers[layer].keys, pair.cache_b.layers[layer].keys, atol=1e-10)
    assert not torch.allclose(kept.layers[1].keys[..., start:end, :], pair.cache_b.layers[1].keys[..., start:end, :])
    with pytest.raises(VflError, match="--keep-injected applies to --what hidden only"):
        narrowed(layer_windows(4), "kv", keep_injected=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_evaluation_answers_as_the_engine_does(adapters, family):
    """`generate` over left-padded batches of different questions and images gives, item for item, the
    answers of the engine's one-row path (prompts of different lengths, so the padding is exercised)."""
    from vfl.evaluate import answers

    adapter = adapters(family)
    side = adapter.tokenizer.padding_side
    images, questions = [], []
    for function in ("count", "ocr", "recog"):
        question, image_a, image_b, *_ = make_pair(function, 0, 64, 0)
        images += [image_a, image_b]
        questions += [question, question + " Think of the picture as a whole."]
    one = answers(adapter, images, questions, 6, batch_size=1)
    batched = answers(adapter, images, questions, 6, batch_size=4)
    assert batched == one
    assert len({len(adapter.tokenizer(adapter.chat_text(q)).input_ids) for q in questions}) > 1
    assert adapter.tokenizer.padding_side == side  # the tokenizer is handed back as it was


@pytest.mark.parametrize("family", FAMILIES)
def test_the_engine_passes_its_cache_under_the_installed_transformers_name(adapters, family):
    """transformers 5.24 renamed forward's `past_key_values` to `cache` and warns on the old name: a sweep,
    its scores and a drop must not warn (users would see it in every run)."""
    import warnings

    adapter = adapters(family)
    prompt_a, prompt_b = prompts(adapter, 1)
    rows = controls(adapter.num_layers) + layer_windows(adapter.num_layers)[:1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        swap_sweep(adapter, prompt_a, prompt_b, rows, 2)
        swap_logprobs(adapter, prompt_a, prompt_b, rows, [[1], [2]])
        drop_sweep(adapter, prompt_a, rows, 2)


def test_a_forward_without_the_new_cache_name_gets_the_old_one(adapters):
    """transformers 5.23's forward knows only `past_key_values`."""
    from vfl.models import adapter_for

    adapter = adapters("llava")
    model = adapter.model

    class OlderLlava(type(model)):
        def forward(self, input_ids=None, past_key_values=None, **kwargs):
            return super().forward(input_ids=input_ids, cache=past_key_values, **kwargs)

    assert set(adapter.cache_inputs(None)) == {"cache", "use_cache"}
    prompt_a, prompt_b = prompts(adapter, 1)
    expected = swap_sweep(adapter, prompt_a, prompt_b, controls(adapter.num_layers), NEW)
    model.__class__ = OlderLlava
    try:
        older = adapter_for(model, adapter.processor)
        assert set(older.cache_inputs(None)) == {"past_key_values", "use_cache"}
        assert swap_sweep(older, prompt_a, prompt_b, controls(older.num_layers), NEW) == expected
    finally:
        model.__class__ = OlderLlava.__mro__[1]
