"""The KV cache's size from /api/show's model_info, checked against published shapes and hand computation."""

from __future__ import annotations

from app.backends.kvcache import KvShape, kv_shape

LLAMA31_8B = {  # Ollama 0.11's /api/show for llama3.1:8b (the keys that matter)
    "general.architecture": "llama", "llama.block_count": 32, "llama.embedding_length": 4096,
    "llama.attention.head_count": 32, "llama.attention.head_count_kv": 8, "llama.context_length": 131072,
}


def test_llama31_8b_keeps_128_kib_a_token():
    shape = kv_shape(LLAMA31_8B)
    assert shape == KvShape(layers=32, kv_heads=8, head_dim=128)
    # 2 (keys and values) × 32 layers × 8 heads × 128 × 2 bytes = 131,072: 1 GiB at 8,192 tokens
    assert shape.bytes_per_token == 131_072 and shape.bytes_per_token * 8192 == 1 << 30
    assert shape.words() == "32 layers × 8 KV heads × 128"


def test_a_head_size_the_model_states_wins_and_heads_may_vary_by_layer():
    qwen3 = {"general.architecture": "qwen3", "qwen3.block_count": 36, "qwen3.embedding_length": 2560,
             "qwen3.attention.head_count": 32, "qwen3.attention.head_count_kv": 8, "qwen3.attention.key_length": 128}
    assert kv_shape(qwen3).head_dim == 128  # not 2560 / 32 = 80
    varied = {"general.architecture": "x", "x.block_count": 3, "x.embedding_length": 512,
              "x.attention.head_count": 8, "x.attention.head_count_kv": [2, 4, 2]}
    assert kv_shape(varied).bytes_per_token == 2 * (2 + 4 + 2) * 64 * 2
    no_gqa = {"general.architecture": "y", "y.block_count": 2, "y.embedding_length": 256, "y.attention.head_count": 4}
    assert kv_shape(no_gqa) == KvShape(layers=2, kv_heads=4, head_dim=64)


def test_what_does_not_say_enough_gives_no_estimate():
    for info in (None, {}, {"general.architecture": "bert"}, {**LLAMA31_8B, "llama.block_count": "32"},
                 {**LLAMA31_8B, "llama.attention.head_count_kv": [8, 8]},  # one per layer, but not 32 of them
                 {"general.architecture": "z", "z.block_count": 2, "z.embedding_length": 100,
                  "z.attention.head_count": 3}):  # 100 / 3: no whole head size
        assert kv_shape(info) is None, info
