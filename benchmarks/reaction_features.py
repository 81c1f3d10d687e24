"""Write ``tvm_mpq/data/reactions.npz``: the rxnmap corpus model's inputs, from real reactions.

The corpus's reaction transformer (``rxnmap-attention``: chython's atom-to-atom mapping model as
the ``chython-rxnmap`` wheel ships it) reads a reaction as one row of tokens (a reaction token,
then a molecule token and its atoms for each reactant and each product) in four integer tensors:
element codes, neighbour counts, roles and the matrix of bond-path distances within each
molecule. Random integers would not be a reaction: the distances must be those of the molecules'
graphs, the atoms on both sides the same atoms. So the inputs are computed once, here, by
chython's own encoder (``chython.reactions.attention._encode.encode_reaction``, what
``ReactionContainer.attention_mapping`` runs before the model), and committed: the product and
its tests need neither chython nor the model's package for them.

The reactions: five textbook bond-forming reactions of common building blocks (amide coupling,
Fischer esterification, sulfonamide formation, Williamson ether synthesis, reductive amination),
each written with its one-atom by-product (water, HCl, HBr) and balanced in heavy atoms, so a
reaction of reactants with ``a + b`` heavy atoms is a row of ``5 + 2 (a + b)`` tokens. The model
takes one reaction unpadded (padded rows are masked out of every attention row, which leaves a
padded position's softmax empty: NaN), so every sample has one static length: the pairs of
building blocks with ``a + b = 19`` (43 tokens), enumerated, shuffled with a seed and dealt out
over the five kinds: 24 samples. Values are small integers, stored as int16.

Needs, beside the project's environment: ``pip install chython==3.7`` (built from its source
distribution: Cython and a C compiler), then ``python benchmarks/reaction_features.py``.
"""

from __future__ import annotations

import argparse
import itertools
import random
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tvm_mpq" / "data" / "reactions.npz"
HEAVY_ATOMS = 19
"""Heavy atoms of the two reactants together: 43 tokens a reaction."""
SAMPLES = 24

# Building blocks as SMILES fragments whose open bond is at the joining end, so a reactant and the
# product are concatenations (every ring closed inside its fragment).
ACYL = ("CC(=O)", "c1ccccc1C(=O)", "Clc1ccc(cc1)C(=O)", "COc1ccc(cc1)C(=O)", "c1ccc(cc1)CC(=O)", "c1ccncc1C(=O)",
        "c1ccoc1C(=O)", "c1ccsc1C(=O)", "CC(C)C(=O)", "C1CCC(CC1)C(=O)", "O=[N+]([O-])c1ccc(cc1)C(=O)",
        "c1ccccc1C=CC(=O)", "CC(C)Cc1ccc(cc1)C(C)C(=O)", "CCCCCC(=O)", "CC(C)(C)OC(=O)NCC(=O)",
        "Fc1ccc(cc1)C(=O)", "Cc1ccccc1C(=O)")
"""Carboxylic acids without their OH (acid: fragment + ``O``)."""
AMINES = ("NCc1ccccc1", "N1CCOCC1", "N1CCCCC1", "Nc1ccccc1", "Nc1ccc(F)cc1", "NC1CCCCC1", "NCCc1ccccc1",
          "N1CCN(C)CC1", "NCC(=O)OC", "N(CC)CC", "Nc1cccc(Cl)c1", "Nc1ccc(OC)cc1", "N1CCCC1",
          "N1CCN(CC1)c1ccccc1", "NC(C)(C)C", "NCc1ccco1", "Nc1ccncc1", "NCc1ccc(Cl)cc1")
"""Primary and secondary amines, nitrogen first."""
ALCOHOLS = ("OC", "OCC", "OC(C)C", "OCc1ccccc1", "OCCc1ccccc1", "OC1CCCCC1", "OCC(C)C", "OCCCC", "OCCOC")
"""Alcohols, oxygen first."""
SULFONYLS = ("Cc1ccc(cc1)S(=O)(=O)", "c1ccccc1S(=O)(=O)", "CS(=O)(=O)", "Clc1ccc(cc1)S(=O)(=O)",
             "COc1ccc(cc1)S(=O)(=O)")
"""Sulfonyl chlorides without their chlorine."""
PHENOLS = ("c1ccccc1O", "Cc1ccc(cc1)O", "COc1ccc(cc1)O", "Clc1ccc(cc1)O", "c1ccc2cc(ccc2c1)O", "N#Cc1ccc(cc1)O",
           "O=Cc1ccc(cc1)O")
"""Phenols, oxygen last."""
ALKYLS = ("Cc1ccccc1", "CC", "CCCC", "CC(=O)OCC", "CC=C", "Cc1ccc(cc1)C#N", "CCc1ccccc1", "CC1CC1")
"""Alkyl bromides without their bromine, the carbon that carried it first."""
ALDEHYDES = ("c1ccccc1C", "Clc1ccc(cc1)C", "COc1ccc(cc1)C", "c1ccncc1C", "c1ccoc1C", "CC(C)C", "C1CCC(CC1)C")
"""Aldehydes without their oxygen (aldehyde: fragment + ``=O``)."""

KINDS = {
    # kind: (first building blocks, second building blocks, reactant 1, reactant 2, product, by-product)
    "amide coupling": (ACYL, AMINES, lambda x: x + "O", lambda y: y, lambda x, y: x + y, "O"),
    "esterification": (ACYL, ALCOHOLS, lambda x: x + "O", lambda y: y, lambda x, y: x + y, "O"),
    "sulfonamide": (SULFONYLS, AMINES, lambda x: x + "Cl", lambda y: y, lambda x, y: x + y, "Cl"),
    "williamson ether": (PHENOLS, ALKYLS, lambda x: x, lambda y: "Br" + y, lambda x, y: x + y, "Br"),
    "reductive amination": (ALDEHYDES, AMINES, lambda x: x + "=O", lambda y: y, lambda x, y: x + y, "O"),
}


def candidates(kind: str) -> list[str]:
    """Every reaction SMILES of ``kind`` whose two reactants hold :data:`HEAVY_ATOMS` heavy atoms."""
    from chython import smiles

    first, second, r1, r2, product, by_product = KINDS[kind]
    found = []
    for x, y in itertools.product(first, second):
        reactants = [r1(x), r2(y)]
        if sum(len(smiles(s)) for s in reactants) == HEAVY_ATOMS:
            found.append(".".join(reactants) + ">>" + product(x, y) + "." + by_product)
    return found


def reactions(count: int, seed: int = 11) -> list[tuple[str, str]]:
    """``count`` ``(kind, reaction SMILES)``, the kinds in turn, each kind's pairs shuffled."""
    rng = random.Random(seed)
    pools = {}
    for kind in KINDS:
        pool = candidates(kind)
        rng.shuffle(pool)
        pools[kind] = pool
    picked: list[tuple[str, str]] = []
    for kind in itertools.cycle(KINDS):
        if len(picked) == count:
            return picked
        if not any(pools.values()):
            raise SystemExit(f"only {len(picked)} reactions of {HEAVY_ATOMS} reactant heavy atoms")
        if pools[kind]:
            picked.append((kind, pools[kind].pop()))
    raise AssertionError


def main() -> None:
    from chython import read_reaction_smiles
    from chython.reactions.attention._encode import encode_reaction

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    args = parser.parse_args()
    chosen = reactions(SAMPLES)
    arrays: dict[str, list[np.ndarray]] = {"atoms": [], "neighbors": [], "distances": [], "roles": []}
    for kind, record in chosen:
        reaction = read_reaction_smiles(record)
        encoded = encode_reaction(reaction.reactants, reaction.products)
        for name, values in arrays.items():
            values.append(np.asarray(getattr(encoded, name))[None])
        print(f"{kind:20s} {record}  ({encoded.atoms.shape[0]} tokens)")
    stored = {}
    for name, values in arrays.items():
        stacked = np.stack(values)
        stored[name] = stacked.astype(np.int16)
        if not np.array_equal(stored[name], stacked):
            raise SystemExit(f"{name}: not exact in int16")
    stored["reaction_smiles"] = np.asarray([record for _, record in chosen])
    stored["reaction_kind"] = np.asarray([kind for kind, _ in chosen])
    np.savez_compressed(args.output, **stored)
    print(f"{args.output}: {len(chosen)} reactions, " + ", ".join(f"{k} {v.shape}" for k, v in stored.items()))


if __name__ == "__main__":
    main()
