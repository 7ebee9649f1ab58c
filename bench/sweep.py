"""Benchmark: a full single-layer swap sweep against plain generation and a naive sweep.

(a) plain: `generate` the answers of both images of a pair (two calls);
(b) sweep: every layer swapped one at a time (+ the two controls) with the engine: two prefix
    prefills, then all variants batched through the suffix;
(c) naive: the same sweep with a full prefill of both images for every variant.

The model is nano's architecture with real pretrained parts: SmolLM2-135M-Instruct (30 layers, its
own BPE tokenizer) fed by DINOv2-S at 224 px without the pixel shuffle, so 256 visual tokens. Its
projector is untrained: timing does not depend on it. Every path decodes exactly --new-tokens tokens
(end-of-answer tokens are ignored), so the three timings compare the same work.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vfl.interventions import controls, layer_windows, swap_sweep
from vfl.models import adapter_for
from vfl.probes.generate import make_pair


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from vfl.nano.model import NanoSpec, build_untrained

    model, processor = build_untrained(NanoSpec(vision_layers=[12], shuffle=1))
    adapter = adapter_for(model, processor)
    adapter.eos_token_ids = set()  # fixed-length decoding on every path
    question, image_a, image_b, *_ = make_pair("count", 0, 224, 0)
    prompt_a, prompt_b = adapter.build_prompt(image_a, question), adapter.build_prompt(image_b, question)
    visual = prompt_a.visual_span[1] - prompt_a.visual_span[0]
    interventions = controls(adapter.num_layers) + layer_windows(adapter.num_layers)
    new = args.new_tokens
    print(f"model: nano-256 (DINOv2-S + SmolLM2-135M), {adapter.num_layers} layers, {visual} visual tokens, "
          f"{prompt_a.input_ids.shape[1]} prompt tokens, {new} new tokens, {torch.get_num_threads()} threads")

    def plain():
        for prompt in (prompt_a, prompt_b):
            model.generate(input_ids=prompt.input_ids, attention_mask=torch.ones_like(prompt.input_ids),
                           **prompt.image_inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False)

    def sweep():
        swap_sweep(adapter, prompt_a, prompt_b, interventions, new)

    def naive():
        for intervention in interventions:
            swap_sweep(adapter, prompt_a, prompt_b, [intervention], new)

    with torch.inference_mode():
        plain()  # warm-up
        a = timed(plain, args.repeats)
        b = timed(sweep, args.repeats)
        c = timed(naive, 1)
    print(f"(a) plain generate, both images:        {a:8.2f} s")
    print(f"(b) engine sweep, {len(interventions)} variants:           {b:8.2f} s")
    print(f"(c) naive sweep, full prefill per variant: {c:8.2f} s")
    print(f"ratios: sweep/plain={b / a:.2f} naive/sweep={c / b:.2f}")


if __name__ == "__main__":
    main()
