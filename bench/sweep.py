"""Benchmark: a full single-layer swap sweep against plain generation and a naive sweep.

(a) plain: `generate` the answers of both images of a pair (two calls);
(b) sweep: every layer swapped one at a time (+ the two controls) with the engine: two prefix
    prefills, then all variants batched through the suffix;
(c) naive: the same sweep with a full prefill of both images for every variant;
(d) throughput: probes per second of the engine's sweep over --probes different pairs, and peak memory
    (CUDA: the allocator's peak; CPU: the process's peak resident set);
(e) scored: the sweep with the teacher-forced log-probabilities of the controls' answers under every row
    (`vfl locate`'s scores), as a decode and then a scoring pass that runs the question again
    (`swap_sweep` + `swap_logprobs`), and as `swap_answers`, where one run of the question serves both and
    a row's own answer is scored by its decode. With random weights most rows keep A's answer.

Shapes (--shape):
  nano-256  nano's architecture with real pretrained parts: SmolLM2-135M-Instruct (30 layers, its own BPE
            tokenizer) fed by DINOv2-S at 224 px without the pixel shuffle, so 256 visual tokens; the CPU default.
  llava-7b  a LLaVA-1.5-7B-shaped random model: Llama 32 layers, width 4096, MLP 11008, 32 heads; CLIP-L/14 at
            336 px (24 layers, width 1024), 576 visual tokens; bf16 on GPU. Built on the device from a config.
  tiny      a tiny random LLaVA (for the tests).
Projectors and weights are untrained: timing does not depend on them. Every path decodes exactly
--new-tokens tokens (end-of-answer tokens are ignored), so the timings compare the same work.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from vfl.interventions import controls, layer_windows, swap_answers, swap_logprobs, swap_sweep
from vfl.models import DTYPES, adapter_for, check_device, device_name
from vfl.probes.generate import make_pair

IMAGE_SIZE = {"nano-256": 224, "llava-7b": 336, "tiny": 32}


def timed(fn, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        synchronise(device)
        start = time.perf_counter()
        fn()
        synchronise(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def llava_7b(device: str, dtype: torch.dtype):
    """A random model with LLaVA-1.5-7B's shapes (32064 embedding rows; the tokenizer is vfl's byte-level one)."""
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from vfl.models.tiny import CHAT_TEMPLATES, tiny_tokenizer

    tok = tiny_tokenizer()
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", image_size=336, patch_size=14, hidden_size=1024,
                           intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, projection_dim=768),
        text_config=dict(model_type="llama", vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                         num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                         max_position_embeddings=4096, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype).eval()
    processor = LlavaProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": 336},
                                                                     crop_size={"height": 336, "width": 336}),
                               tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                               chat_template=CHAT_TEMPLATES["llava"], num_additional_image_tokens=1)
    return model, processor


def build(shape: str, device: str, dtype: torch.dtype):
    if shape == "nano-256":
        from vfl.nano.config import NanoSpec
        from vfl.nano.model import build_untrained

        model, processor = build_untrained(NanoSpec(vision_layers=[12], shuffle=1))
        return model.to(device=device, dtype=dtype), processor, "nano-256 (DINOv2-S + SmolLM2-135M)"
    if shape == "llava-7b":
        model, processor = llava_7b(device, dtype)
        return model, processor, "llava-7b-shaped (CLIP-L/336 + Llama-7B, random)"
    from vfl.models.tiny import build_tiny

    model, processor = build_tiny("llava", num_layers=6)
    return model.to(device=device, dtype=dtype), processor, "tiny LLaVA (random)"


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2 ** 30:.1f} GiB (CUDA allocator)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.1f} GiB (process peak RSS)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--shape", default="nano-256", choices=tuple(IMAGE_SIZE), help="model shape")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--dtype", default=None, choices=tuple(DTYPES), help="None: bfloat16 on GPU, float32 on CPU")
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens decoded per answer")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (median)")
    parser.add_argument("--probes", type=int, default=200, help="pairs in the throughput sweep (0: skip it)")
    args = parser.parse_args()
    check_device(args.device)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype] if args.dtype else (torch.float32 if device.type == "cpu" else torch.bfloat16)

    model, processor, name = build(args.shape, args.device, dtype)
    adapter = adapter_for(model, processor)
    adapter.eos_token_ids = set()  # fixed-length decoding on every path
    size = IMAGE_SIZE[args.shape]
    question, image_a, image_b, *_ = make_pair("count", 0, size, 0)
    prompt_a, prompt_b = adapter.build_prompt(image_a, question), adapter.build_prompt(image_b, question)
    visual = prompt_a.visual_span[1] - prompt_a.visual_span[0]
    interventions = controls(adapter.num_layers) + layer_windows(adapter.num_layers)
    new = args.new_tokens
    print(f"model: {name}, {adapter.num_layers} layers, {visual} visual tokens, {prompt_a.input_ids.shape[1]} prompt "
          f"tokens, {new} new tokens, {str(dtype).removeprefix('torch.')}, {device_name(args.device)}")

    def plain():
        for prompt in (prompt_a, prompt_b):
            model.generate(input_ids=prompt.input_ids, attention_mask=torch.ones_like(prompt.input_ids),
                           **prompt.image_inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False)

    def sweep():
        swap_sweep(adapter, prompt_a, prompt_b, interventions, new)

    def naive():
        for intervention in interventions:
            swap_sweep(adapter, prompt_a, prompt_b, [intervention], new)

    def scored_twice():
        tokens = swap_sweep(adapter, prompt_a, prompt_b, interventions, new)
        swap_logprobs(adapter, prompt_a, prompt_b, interventions, tokens[:2])

    def scored():
        swap_answers(adapter, prompt_a, prompt_b, interventions, new)

    with torch.inference_mode():
        plain()  # warm-up
        a = timed(plain, args.repeats, device)
        b = timed(sweep, args.repeats, device)
        c = timed(naive, 1, device)
        e_twice = timed(scored_twice, args.repeats, device)
        e_once = timed(scored, args.repeats, device)
        rate = None
        if args.probes:
            pairs = [make_pair("count", i, size, 1) for i in range(args.probes)]
            synchronise(device)
            start = time.perf_counter()
            for question, image_a, image_b, *_ in pairs:
                swap_sweep(adapter, adapter.build_prompt(image_a, question), adapter.build_prompt(image_b, question),
                           interventions, new)
            synchronise(device)
            rate = args.probes / (time.perf_counter() - start)
    print(f"(a) plain generate, both images:        {a:8.2f} s")
    print(f"(b) engine sweep, {len(interventions)} variants:           {b:8.2f} s")
    print(f"(c) naive sweep, full prefill per variant: {c:8.2f} s")
    if rate is not None:
        print(f"(d) {args.probes}-probe sweep: {rate:.2f} probes/s")
    print(f"(e) scored sweep, decode then scoring pass: {e_twice:8.2f} s; decode and scores together: {e_once:8.2f} s")
    print(f"peak memory: {peak_memory(device)}")
    print(f"ratios: sweep/plain={b / a:.2f} naive/sweep={c / b:.2f}")
    print(f"scoring: two passes/together={e_twice / e_once:.2f} together/unscored sweep={e_once / b:.2f}")


if __name__ == "__main__":
    main()
