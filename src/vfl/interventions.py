"""Interventions on the visual tokens' KV cache, one decoder layer set per batch row.

An intervention is data: a name and the decoder layers it touches. The engine prefills the shared
prefix (every token up to the last visual token) once per image, builds one batched cache whose row v
carries intervention v, and decodes all rows together through the rest of the prompt:

* swap: row v is A's cache with the visual positions' keys and values at layers S_v taken from B's;
* drop: at layers S_v the prompt's later tokens cannot attend to the visual positions (an attention
  function registered with transformers' `AttentionInterface`, set on the language model alone).

The visual span is every position from the first to the last visual token, so layout tokens that some
families interleave with image tiles travel with the image.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
import dataclasses
from dataclasses import dataclass, replace

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from vfl.errors import VflError
from vfl.models import Adapter, Prompt

ATTENTION = "vfl_sdpa"


WHAT = ("kv", "k", "v", "hidden")


@dataclass(frozen=True)
class Intervention:
    """Where and what to intervene on: ``layers`` (decoder indices), under a ``name`` such as "layer 7" or
    "none"; ``what`` B gives: keys and values (``kv``), keys or values only, or the visual positions' residual
    stream entering each of the layers (``hidden``, recomputed onward); ``heads`` (key/value heads, None: all)
    and ``tokens`` (offsets into the visual span, None: all) narrow a swap further; ``keep_injected`` keeps
    A's visual features where a model injects them into later layers (Qwen3-VL's DeepStack)."""

    name: str
    layers: tuple[int, ...]
    what: str = "kv"
    heads: tuple[int, ...] | None = None
    tokens: tuple[int, ...] | None = None
    keep_injected: bool = False  # hidden swaps: keep A's features injected into later layers (Qwen3-VL)


def narrowed(interventions: list[Intervention], what: str = "kv", heads: list[int] | None = None,
             tokens: list[int] | None = None, keep_injected: bool = False) -> list[Intervention]:
    """The same interventions swapping only ``what``, at ``heads`` and ``tokens``."""
    if what not in WHAT:
        raise VflError(f"unknown --what {what!r}; choose from {', '.join(WHAT)}")
    if what == "hidden" and heads is not None:
        raise VflError("--heads applies to key/value swaps (--what kv, k or v), not to --what hidden")
    for name, values in (("--heads", heads), ("--tokens", tokens)):
        if values is not None and (not values or min(values) < 0):
            raise VflError(f"{name} takes non-negative indices, got {values}")
    if keep_injected and what != "hidden":
        raise VflError("--keep-injected applies to --what hidden only")
    return [replace(i, what=what, heads=i.heads if heads is None else tuple(heads),
                    tokens=None if tokens is None else tuple(tokens), keep_injected=keep_injected)
            for i in interventions]


def layer_windows(num_layers: int, window: int = 1) -> list[Intervention]:
    """One intervention per window of ``window`` consecutive layers: k..k+window-1 for every k."""
    if not 1 <= window <= num_layers:
        raise VflError(f"--window must be between 1 and the model's {num_layers} layers, got {window}")
    return [Intervention(f"layer {k}", tuple(range(k, k + window))) for k in range(num_layers - window + 1)]


SWEEPS = ("window", "from", "upto", "heads")


def sweep_interventions(num_layers: int, sweep: str = "window", window: int = 1, layers: list[int] | None = None,
                        num_heads: int | None = None) -> list[Intervention]:
    """The swept interventions, named by their index k: windows k..k+window-1 (``window``), the cumulative
    swaps k..L-1 (``from``) and 0..k (``upto``), which show where a distributed reading starts and ends, or
    key/value head k alone at ``layers`` (``heads``: which heads of a VFL carry the function)."""
    if sweep not in SWEEPS:
        raise VflError(f"unknown --sweep {sweep!r}; choose from {', '.join(SWEEPS)}")
    if sweep == "window":
        return layer_windows(num_layers, window)
    if window != 1:
        raise VflError(f"--window applies to --sweep window only, not to --sweep {sweep}")
    if sweep == "heads":
        if not layers:
            raise VflError("--sweep heads needs --layers: the layers (e.g. a VFL) whose heads to sweep")
        check_layers(layers, num_layers)
        return [Intervention(f"head {h}", tuple(sorted(set(layers))), heads=(h,)) for h in range(num_heads)]
    if sweep == "from":
        return [Intervention(f"from {k}", tuple(range(k, num_layers))) for k in range(num_layers)]
    return [Intervention(f"upto {k}", tuple(range(k + 1))) for k in range(num_layers)]


def custom_interventions(specs: list, num_layers: int, num_heads: int | None = None) -> list[Intervention]:
    """The caller's own interventions, as pyvene and TransformerLens take theirs: each an `Intervention` or a dict
    of its fields (``layers``, and optionally ``name``, ``what``, ``heads``, ``tokens``, ``keep_injected``),
    checked against the model; an unnamed one is "custom k", k its place in the list."""
    known = {f.name for f in dataclasses.fields(Intervention)}
    chosen = []
    for k, spec in enumerate(specs):
        if isinstance(spec, dict):
            if set(spec) - known or "layers" not in spec:
                raise VflError(f"intervention {k} must give layers and may give {', '.join(sorted(known - {'layers'}))}; "
                               f"got {sorted(spec)}")
            spec = Intervention(**{"name": f"custom {k}", **spec, "layers": tuple(spec["layers"]),
                                   **{key: tuple(spec[key]) for key in ("heads", "tokens") if spec.get(key) is not None}})
        elif not isinstance(spec, Intervention):
            raise VflError(f"intervention {k} is a {type(spec).__name__}; give vfl.Intervention objects or dicts")
        if not spec.layers:
            raise VflError(f"intervention {spec.name!r} touches no layer (the no-swap control is always run)")
        check_layers(list(spec.layers), num_layers)
        narrowed([spec], spec.what, spec.heads, spec.tokens, spec.keep_injected)  # its what, heads and tokens checked
        if spec.heads and num_heads is not None and max(spec.heads) >= num_heads:
            raise VflError(f"head {max(spec.heads)} does not exist: this model has key/value heads 0..{num_heads - 1}")
        chosen.append(spec)
    names = [i.name for i in chosen]
    repeated = sorted({n for n in names if names.count(n) > 1} | ({"none", "all"} & set(names)))
    if repeated or not chosen:
        raise VflError(f"interventions need distinct names other than the controls' none and all; got {repeated or 'none'}")
    return chosen


def controls(num_layers: int) -> list[Intervention]:
    """No layer (must give A's own answer) and every layer (must give B's, or for drop: no image at all)."""
    return [Intervention("none", ()), Intervention("all", tuple(range(num_layers)))]


def last_layers(num_layers: int) -> list[Intervention]:
    """Intervention on the last N layers, N = 0..L (the vision-token-dropping curve)."""
    return [Intervention(f"last {n}", tuple(range(num_layers - n, num_layers))) for n in range(num_layers + 1)]


def check_layers(layers: list[int], num_layers: int) -> None:
    bad = [k for k in layers if not 0 <= k < num_layers]
    if bad:
        raise VflError(f"layer index {bad[0]} is out of range: the model has layers 0..{num_layers - 1}")


def _layer_table(interventions: list[Intervention], num_layers: int) -> torch.Tensor:
    table = torch.zeros(len(interventions), num_layers, dtype=torch.bool)
    for row, intervention in enumerate(interventions):
        check_layers(list(intervention.layers), num_layers)
        table[row, list(intervention.layers)] = True
    return table


# -- the prefix ------------------------------------------------------------------------------------
@torch.inference_mode()
def prefill(adapter: Adapter, prompt: Prompt, rows: int = 1, patch=None) -> DynamicCache:
    """Run the image and every token up to the last visual one; return the cache (``rows`` copies of the
    prompt, batch ``rows``). ``patch(layer, hidden)``, if given, may rewrite the hidden states entering each
    decoder layer (forward pre-hooks, removed afterwards)."""
    end = prompt.prefix_length
    if end >= prompt.input_ids.shape[1]:
        raise VflError("the prompt ends with the image; the question must follow it")
    images = {k: v.repeat(rows, *[1] * (v.dim() - 1)) if torch.is_tensor(v) and rows > 1 else v
              for k, v in prompt.image_inputs.items()}
    handles = []
    if patch is not None:
        for index, layer in enumerate(adapter.decoder_layers):
            handles.append(layer.register_forward_pre_hook(_rewrite_hidden(index, patch), with_kwargs=True))
    cache = DynamicCache(config=adapter.model.config)
    try:
        tokens = {k: v[:, :end].expand(rows, -1) for k, v in prompt.token_inputs.items()}
        adapter.model(input_ids=prompt.input_ids[:, :end].expand(rows, -1),
                      position_ids=adapter.model_positions(prompt.positions[..., :end].expand(-1, rows, -1)),
                      **adapter.cache_inputs(cache), logits_to_keep=1, **images, **tokens)
    finally:
        for handle in handles:
            handle.remove()
    return cache


def _rewrite_hidden(index: int, patch):
    def hook(module, args, kwargs):
        if args:
            return (patch(index, args[0]),) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": patch(index, kwargs["hidden_states"])}
    return hook


@dataclass
class Pair:
    """A's and B's prefix caches, and (for hidden-state swaps) B's residual stream entering every layer and
    the visual features B's model injects into later layers (Qwen3-VL's DeepStack; None elsewhere)."""

    cache_a: DynamicCache
    cache_b: DynamicCache
    hidden_b: list[torch.Tensor] | None = None
    injected_b: list[torch.Tensor] | None = None


def prefill_pair(adapter: Adapter, prompt_a: Prompt, prompt_b: Prompt, hidden: bool = False) -> Pair:
    """Both prefixes, once per probe; ``hidden`` also keeps B's hidden states entering each layer and the
    features B's model injects."""
    if not hidden:
        return Pair(prefill(adapter, prompt_a), prefill(adapter, prompt_b))
    kept = [None] * adapter.num_layers

    def keep(layer, states):
        kept[layer] = states.detach().clone()
        return states

    with adapter.injected_features_kept() as injected:
        cache_b = prefill(adapter, prompt_b, patch=keep)
    return Pair(prefill(adapter, prompt_a), cache_b, kept, injected or None)


def swap_visual_hidden(adapter: Adapter, prompt_a: Prompt, pair: Pair, interventions: list[Intervention]) -> DynamicCache:
    """A cache with one row per intervention: A's prefix run again, with the visual positions' hidden states
    entering each of its layers replaced by B's (``tokens`` narrows the positions), everything after
    recomputed. Where the model injects visual features into later layers (Qwen3-VL), a row takes B's
    injections from its first patched layer on, unless ``keep_injected``. Patching every layer (from layer 0)
    gives B's cache exactly."""
    span = prompt_a.visual_span
    length = prompt_a.prefix_length
    heads = 1  # the residual stream has no heads: one "head" covers every position's whole vector
    layers, where, _ = _masks(interventions, adapter.num_layers, heads, length, span)

    def patch(layer, states):
        rows = (layers[:, layer].view(-1, 1) & where[:, 0]).to(states.device)  # (rows, T)
        if not bool(rows.any()):
            return states
        return torch.where(rows.unsqueeze(-1), pair.hidden_b[layer].to(states.dtype), states)

    if not pair.injected_b:
        return prefill(adapter, prompt_a, rows=len(interventions), patch=patch)
    count = len(pair.injected_b)
    use_b = torch.tensor([[bool(i.layers) and not i.keep_injected and k >= min(i.layers) for k in range(count)]
                          for i in interventions])
    with adapter.injected_features_replaced(pair.injected_b, use_b):
        return prefill(adapter, prompt_a, rows=len(interventions), patch=patch)


def _masks(interventions: list[Intervention], num_layers: int, heads: int, length: int,
           span: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which rows take B at each layer (rows, L), at which (head, position) (rows, H, T), and whether for
    keys and for values (rows, 2): the intervention's data as boolean tables."""
    layers = _layer_table(interventions, num_layers)
    where = torch.zeros(len(interventions), heads, length, dtype=torch.bool)
    parts = torch.zeros(len(interventions), 2, dtype=torch.bool)
    size = span[1] - span[0]
    for row, intervention in enumerate(interventions):
        head_ids = list(range(heads)) if intervention.heads is None else list(intervention.heads)
        offsets = list(range(size)) if intervention.tokens is None else list(intervention.tokens)
        if head_ids and max(head_ids) >= heads:
            raise VflError(f"head {max(head_ids)} does not exist: this model has key/value heads 0..{heads - 1}")
        if offsets and max(offsets) >= size:
            raise VflError(f"visual token {max(offsets)} does not exist: the image gives tokens 0..{size - 1}")
        where[row, torch.tensor(head_ids, dtype=torch.long).view(-1, 1),
              torch.tensor([span[0] + o for o in offsets], dtype=torch.long).view(1, -1)] = True
        parts[row] = torch.tensor(["k" in intervention.what, "v" in intervention.what])
    return layers, where, parts


def swap_visual_kv(cache_a: DynamicCache, cache_b: DynamicCache, span: tuple[int, int],
                   interventions: list[Intervention], config) -> DynamicCache:
    """A cache with one row per intervention: A's keys and values, except the visual span's at its layers,
    which are B's (only its keys or values, heads and visual tokens where it names them).

    One `torch.where` per layer and tensor builds every row at once; neither input cache is copied or changed.
    """
    num_layers = len(cache_a.layers)
    heads, length = cache_a.layers[0].keys.shape[1], cache_a.layers[0].keys.shape[-2]
    layers, where, parts = _masks(interventions, num_layers, heads, length, span)
    batched = DynamicCache(config=config)
    for layer in range(num_layers):
        a, b = cache_a.layers[layer], cache_b.layers[layer]
        here = (layers[:, layer].view(-1, 1, 1) & where).unsqueeze(-1).to(a.keys.device)
        take_k = here & parts[:, 0].view(-1, 1, 1, 1).to(a.keys.device)
        take_v = here & parts[:, 1].view(-1, 1, 1, 1).to(a.keys.device)
        batched.update(torch.where(take_k, b.keys, a.keys), torch.where(take_v, b.values, a.values), layer)
    return batched


def cache_states(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every layer's keys and values as they are now: a cache grows by new tensors, so these stay as they are."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def cache_rows(states: list[tuple[torch.Tensor, torch.Tensor]], rows: torch.Tensor, config) -> DynamicCache:
    """A new cache of rows ``rows`` (batch indices, repeats allowed) of every layer's keys and values."""
    cache = DynamicCache(config=config)
    for layer, (keys, values) in enumerate(states):
        cache.update(keys[rows.to(keys.device)], values[rows.to(values.device)], layer)
    return cache


def repeat_cache(cache: DynamicCache, times: int, config) -> DynamicCache:
    """Each row of ``cache`` ``times`` times in a row (row r becomes rows r*times .. r*times + times - 1):
    e.g. copies of one prefix that then decode under different drops."""
    rows = torch.arange(cache.layers[0].keys.shape[0]).repeat_interleave(times)
    return cache_rows(cache_states(cache), rows, config)


# -- dropping visual KV through the attention interface --------------------------------------------
@dataclass
class _DropPlan:
    layers: torch.Tensor  # (rows, num_layers) bool: row r drops the visual keys at these layers
    span: tuple[int, int]


_PLAN: ContextVar[_DropPlan | None] = ContextVar("vfl_drop_plan", default=None)


def _attention(module, query, key, value, attention_mask, **kwargs):
    """SDPA, except that rows of the active drop plan cannot attend to the visual keys at this layer."""
    plan = _PLAN.get()
    if plan is not None:
        rows = plan.layers[:, module.layer_idx].to(query.device)
        if bool(rows.any()):
            q_len, k_len = query.shape[2], key.shape[2]
            if attention_mask is None:  # plain causal: queries are the last q_len positions
                q_pos = torch.arange(k_len - q_len, k_len, device=query.device)
                attention_mask = q_pos.view(-1, 1) >= torch.arange(k_len, device=query.device).view(1, -1)
            visual = torch.zeros(k_len, dtype=torch.bool, device=query.device)
            visual[plan.span[0]:plan.span[1]] = True
            attention_mask = attention_mask.bool() & ~(rows.view(-1, 1, 1, 1) & visual.view(1, 1, 1, -1))
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(ATTENTION, _attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)


@contextmanager
def visual_kv_dropped(adapter: Adapter, interventions: list[Intervention], span: tuple[int, int]):
    """Within the block, batch row r of the language model cannot read the visual span at its layers."""
    language_model = adapter.language_model
    previous = language_model.config._attn_implementation
    language_model.set_attn_implementation(ATTENTION)
    token = _PLAN.set(_DropPlan(_layer_table(interventions, adapter.num_layers), span))
    try:
        yield
    finally:
        _PLAN.reset(token)
        language_model.set_attn_implementation(previous)


# -- decoding --------------------------------------------------------------------------------------
def suffix_inputs(adapter: Adapter, prompt: Prompt, rows: int) -> dict:
    """The forward's token ids and positions of the prompt's suffix (what follows the prefilled prefix), for
    ``rows`` cache rows."""
    start = prompt.prefix_length
    return {"input_ids": prompt.input_ids[:, start:].expand(rows, -1),
            "position_ids": adapter.model_positions(prompt.positions[..., start:].expand(-1, rows, -1))}


@dataclass
class Decoded:
    """Greedy answers of the cache rows (``tokens``, each cut after its first EOS) and, for scoring, the summed
    log-probability of each row's own answer (``logprobs``) and what scoring other answers from the same rows
    needs: the logits after the prompt's suffix (``first``, (rows, 1, vocab)) and every layer's keys and values
    right after it (``after_suffix``)."""

    tokens: list[list[int]]
    logprobs: list[float] | None = None
    first: torch.Tensor | None = None
    after_suffix: list[tuple[torch.Tensor, torch.Tensor]] | None = None


@torch.inference_mode()
def greedy_decode(adapter: Adapter, cache: DynamicCache, prompt: Prompt, rows: int, max_new_tokens: int,
                  scoring: bool = False) -> Decoded:
    """Feed the prompt's suffix to every cache row and decode greedily; each row ends at its first EOS.
    ``scoring`` also sums each row's log-probability of its own answer and keeps the cache and logits right
    after the suffix, for `continuation_logprobs`."""
    inputs = suffix_inputs(adapter, prompt, rows)
    last = prompt.positions[..., -1:].expand(-1, rows, -1)
    eos = torch.tensor(sorted(adapter.eos_token_ids), dtype=torch.long, device=adapter.device)
    finished = torch.zeros(rows, dtype=torch.bool, device=adapter.device)
    steps, step_logprobs, first, after_suffix = [], [], None, None
    for step in range(max_new_tokens):
        logits = adapter.model(**inputs, **adapter.cache_inputs(cache), logits_to_keep=1).logits[:, -1]
        if step == 0 and scoring:
            first, after_suffix = logits[:, None], cache_states(cache)
        token = logits.argmax(-1)
        steps.append(token)
        if scoring:
            step_logprobs.append(_log_softmax(logits).gather(-1, token[:, None])[:, 0])
        finished |= torch.isin(token, eos)
        if bool(finished.all()):
            break
        inputs = {"input_ids": token[:, None], "position_ids": adapter.model_positions(last + step + 1)}
    eos_ids = adapter.eos_token_ids
    tokens = [_cut_at_eos(row, eos_ids) for row in torch.stack(steps, dim=1).tolist()]
    if not scoring:
        return Decoded(tokens)
    per_step = torch.stack(step_logprobs, dim=1).cpu()
    return Decoded(tokens, [float(per_step[r, :len(t)].sum()) for r, t in enumerate(tokens)], first, after_suffix)


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    return logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(-1)  # bf16/fp16 -> fp32


def _cut_at_eos(tokens: list[int], eos_ids: set[int]) -> list[int]:
    for i, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[: i + 1]
    return tokens


def _chunks(items: list, size: int | None):
    size = size or max(1, len(items))
    for i in range(0, len(items), size):
        yield items[i:i + size]


def check_pair(probe_id: str, prompt_a: Prompt, prompt_b: Prompt) -> None:
    if not prompt_a.same_layout(prompt_b):
        raise VflError(f"probe {probe_id}: images A and B give different visual token layouts "
                       f"({prompt_a.input_ids.shape[1]} vs {prompt_b.input_ids.shape[1]} tokens); give both images "
                       "the same size or pass --resize")


@torch.inference_mode()
def continuation_logprobs(adapter: Adapter, after_suffix: list[tuple[torch.Tensor, torch.Tensor]], first: torch.Tensor,
                          prompt: Prompt, pairs: list[tuple[int, list[int]]]) -> list[float]:
    """Summed log-probability of each ``(row, answer)`` pair: the answer's tokens continuing cache row ``row``,
    teacher-forced from the keys and values right after the prompt's suffix and the logits there (``first``).
    Answers are right-padded: causal attention keeps padding out of the sums."""
    if not pairs:
        return []
    index = torch.tensor([row for row, _ in pairs], device=first.device)
    answers = [answer for _, answer in pairs]
    longest = max(1, max(len(a) for a in answers))
    pad = int(prompt.input_ids[0, -1])
    ids = torch.tensor([a + [pad] * (longest - len(a)) for a in answers], device=adapter.device)
    logits = first[index]
    if longest > 1:
        cache = cache_rows(after_suffix, index, adapter.model.config)
        steps = torch.arange(1, longest, device=prompt.positions.device).view(1, 1, -1)
        positions = (prompt.positions[..., -1:] + steps).expand(-1, len(ids), -1)
        rest = adapter.model(input_ids=ids[:, :-1], position_ids=adapter.model_positions(positions),
                             **adapter.cache_inputs(cache), logits_to_keep=longest - 1).logits
        logits = torch.cat([logits.to(rest.device), rest], dim=1)
    logprobs = _log_softmax(logits).gather(-1, ids.to(logits.device).unsqueeze(-1)).squeeze(-1)
    lengths = torch.tensor([len(a) for a in answers], device=logprobs.device)
    mask = torch.arange(longest, device=logprobs.device).view(1, -1) < lengths.view(-1, 1)
    return (logprobs * mask).sum(-1).cpu().tolist()


@torch.inference_mode()
def answer_logprobs(adapter: Adapter, cache: DynamicCache, prompt: Prompt, answers: list[list[int]]) -> list[list[float]]:
    """``[r][j]``: summed log-probability of ``answers[j]`` continuing the prompt's suffix under cache row r
    (teacher forcing). The suffix runs once per row and its cache serves every answer: a short answer's cost is
    mostly the suffix."""
    rows = cache.layers[0].keys.shape[0]
    first = adapter.model(**suffix_inputs(adapter, prompt, rows), **adapter.cache_inputs(cache),
                          logits_to_keep=1).logits[:, -1:]
    values = continuation_logprobs(adapter, cache_states(cache), first, prompt, [(r, a) for r in range(rows) for a in answers])
    return [values[r * len(answers):(r + 1) * len(answers)] for r in range(rows)]


def _row_batches(interventions: list[Intervention], size: int | None):
    """(row indices, interventions) batches of at most ``size`` rows, hidden-state swaps apart from cache swaps."""
    for hidden in (False, True):
        rows = [r for r, i in enumerate(interventions) if (i.what == "hidden") == hidden]
        for chunk in _chunks(rows, size):
            yield chunk, [interventions[r] for r in chunk]


def _row_cache(adapter: Adapter, pair: Pair, prompt_a: Prompt, chunk: list[Intervention]) -> DynamicCache:
    if chunk[0].what == "hidden":
        if pair.hidden_b is None:
            raise ValueError("hidden-state swaps need prefill_pair(..., hidden=True)")
        return swap_visual_hidden(adapter, prompt_a, pair, chunk)
    return swap_visual_kv(pair.cache_a, pair.cache_b, prompt_a.visual_span, chunk, adapter.model.config)


def _pair(adapter, prompt_a, prompt_b, interventions, pair):
    return pair or prefill_pair(adapter, prompt_a, prompt_b, any(i.what == "hidden" for i in interventions))


def swap_sweep(adapter: Adapter, prompt_a: Prompt, prompt_b: Prompt, interventions: list[Intervention],
               max_new_tokens: int, batch_size: int | None = None, pair: Pair | None = None) -> list[list[int]]:
    """Answer tokens of A's prompt for every swap intervention; two prefills in all (or none, given the
    ``pair`` of A's and B's prefixes; hidden-state swaps run A's prefix again per batch), rows batched."""
    pair = _pair(adapter, prompt_a, prompt_b, interventions, pair)
    answers = [None] * len(interventions)
    for rows, chunk in _row_batches(interventions, batch_size):
        cache = _row_cache(adapter, pair, prompt_a, chunk)
        for row, tokens in zip(rows, greedy_decode(adapter, cache, prompt_a, len(chunk), max_new_tokens).tokens):
            answers[row] = tokens
    return answers


def swap_logprobs(adapter: Adapter, prompt_a: Prompt, prompt_b: Prompt, interventions: list[Intervention],
                  answers: list[list[int]], batch_size: int | None = None, pair: Pair | None = None) -> list[list[float]]:
    """``[v][j]``: the log-probability of ``answers[j]`` (e.g. A's and B's own answers) under swap
    intervention v, teacher-forced. Each row's cache and suffix are computed once for all answers (a
    hidden-state swap's patched prefix is the costly part)."""
    pair = _pair(adapter, prompt_a, prompt_b, interventions, pair)
    logprobs = [None] * len(interventions)
    for rows, chunk in _row_batches(interventions, batch_size):
        for r, value in zip(rows, answer_logprobs(adapter, _row_cache(adapter, pair, prompt_a, chunk), prompt_a, answers)):
            logprobs[r] = value
    return logprobs


def swap_answers(adapter: Adapter, prompt_a: Prompt, prompt_b: Prompt, interventions: list[Intervention],
                 max_new_tokens: int, batch_size: int | None = None,
                 pair: Pair | None = None) -> tuple[list[list[int]], list[list[float]]]:
    """`swap_sweep`'s answers and, per row, `swap_logprobs`' scores of the answers of the first two rows (the
    controls: A's and B's), in fewer forward passes: each row's suffix runs once for its decode and its scores,
    and where a row's own answer is A's or B's, the decode's log-probabilities of it are that score."""
    pair = _pair(adapter, prompt_a, prompt_b, interventions, pair)
    tokens, logprobs, later = [None] * len(interventions), [None] * len(interventions), []
    for rows, chunk in _row_batches(interventions, batch_size):
        decoded = greedy_decode(adapter, _row_cache(adapter, pair, prompt_a, chunk), prompt_a, len(chunk),
                                max_new_tokens, scoring=True)
        for r, answer in zip(rows, decoded.tokens):
            tokens[r] = answer
        if tokens[0] is None or tokens[1] is None:  # batches of one: the controls' answers are not both known yet
            later += rows
            continue
        drafts = tokens[:2]
        pairs = [(i, d) for i, answer in enumerate(decoded.tokens) for d in drafts if answer != d]
        forced = iter(continuation_logprobs(adapter, decoded.after_suffix, decoded.first, prompt_a, pairs))
        for i, (r, answer) in enumerate(zip(rows, decoded.tokens)):
            logprobs[r] = [decoded.logprobs[i] if answer == d else next(forced) for d in drafts]
    if later:
        for r, value in zip(later, swap_logprobs(adapter, prompt_a, prompt_b, [interventions[r] for r in later],
                                                 tokens[:2], batch_size, pair)):
            logprobs[r] = value
    return tokens, logprobs


def drop_sweep(adapter: Adapter, prompt: Prompt, interventions: list[Intervention], max_new_tokens: int,
               batch_size: int | None = None) -> list[list[int]]:
    """Answer tokens of the prompt with the visual KV dropped at each intervention's layers; one prefill."""
    cache = prefill(adapter, prompt)
    answers = []
    for chunk in _chunks(interventions, batch_size):
        with visual_kv_dropped(adapter, chunk, prompt.visual_span):
            answers += greedy_decode(adapter, repeat_cache(cache, len(chunk), adapter.model.config), prompt,
                                     len(chunk), max_new_tokens).tokens
    return answers
