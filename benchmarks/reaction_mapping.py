"""Does the int8 reaction transformer map the same atoms? chython's atom-to-atom mapping read
from tvm-mpq's builds of ``rxnmap-attention`` against the mapping read from its fp32 build::

    python benchmarks/reaction_mapping.py [--rates 100,50] [--calib-size 8] [--threads 2]

The corpus model's output is the last layer's attention between a reaction's tokens; what its
package does with it is chython's greedy assignment of each product atom to a reactant atom
(``chython.reactions.attention._assign.greedy_mapping`` over the product-by-reactant attention
summed with its transpose and masked to equal elements, as ``ReactionContainer.
attention_mapping`` runs it). For each held-out reaction of the bundled set (the ones after the
calibration reactions, ``tvm_mpq/data/reactions.npz``) this runs the fp32 build, the build at each
``--rates`` (QuantuneV2, the product's default quantizers) and onnxruntime on the file, and counts
the reactions whose mapping differs from the fp32 build's, up to the molecules' symmetry (the
condensed graphs of reaction, isomorphic or not): the task's own figure beside the output SQNR. Needs chython beside the project's environment (``pip install chython==3.7``,
built from its source distribution). Prints a table and writes ``-o`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

MODEL = "rxnmap-attention"
MULTIPLIER = 1.75
"""chython's default weight of a neighbour's agreement in the greedy assignment."""


def mapping(attention: np.ndarray, reaction_smiles: str):
    """The condensed graph of the reaction that chython's assignment from one attention matrix
    writes: the reactant atoms (and any product atom left unplaced) as nodes labelled by element
    and charge, each bond labelled by its order before and after (0: none)."""
    import networkx as nx
    from chython import read_reaction_smiles
    from chython.reactions.attention._assign import greedy_mapping, side_adjacency
    from chython.reactions.attention._encode import encode_reaction

    reaction = read_reaction_smiles(reaction_smiles)
    encoded = encode_reaction(reaction.reactants, reaction.products)
    scores = (attention[encoded.p2r] + attention[encoded.r2p].T) * encoded.equal_atoms
    assignment, _ = greedy_mapping(scores, side_adjacency(reaction.reactants), side_adjacency(reaction.products),
                                   MULTIPLIER)
    graph = nx.Graph()
    for side, molecules in (("r", reaction.reactants), ("p", reaction.products)):
        position = 0  # the atom's place along its side, as the encoder and the assignment count
        for molecule in molecules:
            node = {}
            for n in molecule.atom_numbers:
                placed = side == "p" and assignment[position] >= 0
                node[n] = ("r", int(assignment[position])) if placed else (side, position)
                if not placed:
                    atom = molecule.atom(n)
                    graph.add_node(node[n], label=(atom.atomic_symbol, atom.charge))
                position += 1
            for bond in molecule.bonds():
                a, b = node[bond.n], node[bond.m]
                before, after = graph.edges[a, b]["label"] if graph.has_edge(a, b) else (0, 0)
                graph.add_edge(a, b, label=(int(bond.order), after) if side == "r" else (before, int(bond.order)))
    return graph


def same_mapping(one, other) -> bool:
    """Whether two condensed reaction graphs are one mapping up to the molecules' symmetry (two
    equivalent atoms of a ring swapped are the same chemistry)."""
    import networkx as nx

    def same(a: dict, b: dict) -> bool:
        return a["label"] == b["label"]

    return nx.is_isomorphic(one, other, node_match=same, edge_match=same)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100,50")
    parser.add_argument("--calib-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/reaction_mapping.json"))
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)

    import onnxruntime as ort

    from tvm_mpq.api import config_for_rate
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.validate import keep_unsupported_fp32
    from tvm_mpq.corpus.catalog import by_name
    from tvm_mpq.corpus.fetch import fetch
    from tvm_mpq.corpus.inputs import feeds
    from tvm_mpq.data.bundled_arrays import bundled_arrays
    from tvm_mpq.metrics.task_metrics import output_sqnr_db
    from tvm_mpq.zoo import load_model

    model = by_name(MODEL)
    path = fetch(model)
    graph = load_model(str(path), model.shapes)
    reactions = bundled_arrays("reactions")["reaction_smiles"]
    held = len(reactions) - args.calib_size
    calib = feeds(model, graph, args.calib_size)
    held_out = feeds(model, graph, held, offset=args.calib_size)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def attentions(run) -> list[np.ndarray]:
        return [np.asarray(run(feed)[0]) for feed in held_out]

    fp32 = attentions(compile_model(graph, config_for_rate(graph, calib, 0, "quantunev2")[0]).run)
    runs = {"onnxruntime fp32": attentions(lambda f: session.run(None, {k: v.astype(np.int64) for k, v in f.items()}))}
    report = None
    for rate in [float(r) for r in args.rates.split(",")]:
        config, report = config_for_rate(graph, calib, rate, "quantunev2", report=report)
        keep_unsupported_fp32(config, report.table)
        runs[f"tvm-mpq {rate:g}% ({config.provenance['bops_reduction_rate']:.1f}% achieved)"] = \
            attentions(compile_model(graph, config).run)
    reference = [mapping(a, s) for a, s in zip(fp32, reactions[args.calib_size:])]
    rows = []
    for name, outs in runs.items():
        otherwise = [k for k, (a, s, r) in enumerate(zip(outs, reactions[args.calib_size:], reference))
                     if not same_mapping(mapping(a, s), r)]
        sqnr = np.median([output_sqnr_db([[o]], [[r]]) for r, o in zip(fp32, outs)])
        rows.append({"build": name, "reactions_mapped_otherwise": otherwise, "reactions": len(reference),
                     "median_output_sqnr_db": round(float(sqnr), 1)})
        print(f"{name:40s} reactions mapped otherwise {len(otherwise)} / {len(reference)} {otherwise}, "
              f"median output SQNR {rows[-1]['median_output_sqnr_db']} dB", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": MODEL, "held_out": len(reference), "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
