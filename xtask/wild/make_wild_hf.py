#!/usr/bin/env python3
"""Exports tiny, randomly initialised HuggingFace `transformers` models —
BERT, DistilBERT, GPT-2, ViT, DeiT, Swin, SegFormer, the Whisper encoder,
the T5 encoder, the CLIP text model, MobileViT — into
OUT/<name>_<ts|dynamo>/ (model.onnx, calib/<input>/k.npy, test/<input>/k.npy,
model.yaml), the layout `run_wild.sh` reads.

    pip install transformers          # tested with transformers 5.23.0, torch 2.15
    python3 xtask/wild/make_wild_hf.py --out /tmp/wild_hf [model ...]
    xtask/wild/run_wild.sh /tmp/wild_hf

No hub access: every model is `XxxModel(XxxConfig(...small...))`. The
data looks like real data: token ids drawn from the vocabulary between a
begin and an end token, attention masks with random padding lengths (zeros
at the end, pad ids under them), token types with a random second segment,
images that are smooth random pictures in [0, 1] normalised with the
ImageNet mean/std, and Whisper log-mel spectrograms of synthetic tones and
noise. Integer inputs are int64 and declared as featuremap inputs.
The TorchScript exporter writes opset 14 and 17 for the text models (ts14,
ts) and opset 17 for the others; dynamo writes opset 18.
"""
import argparse
import os
import warnings

warnings.simplefilter("ignore")
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import transformers as tf  # noqa: E402

tf.logging.set_verbosity_error()
torch.manual_seed(0)

SEQ = 16
N_CALIB, N_TEST = 12, 4
MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


class Wrap(nn.Module):
    """Calls the model with keyword inputs and returns the named outputs."""

    def __init__(self, m, in_names, out_keys):
        super().__init__()
        self.m, self.in_names, self.out_keys = m, in_names, out_keys

    def forward(self, *xs):
        y = self.m(**dict(zip(self.in_names, xs)))
        outs = tuple(y[k] for k in self.out_keys)
        return outs[0] if len(outs) == 1 else outs


# ---------------------------------------------------------------- data
def text_sample(rng, vocab, bos, eos, pad, with_types):
    """One right-padded sentence (or sentence pair): ids, mask, types."""
    n = int(rng.integers(5, SEQ + 1))
    ids = np.full((1, SEQ), pad, np.int64)
    ids[0, :n] = rng.integers(10, vocab, n)
    ids[0, 0] = bos
    ids[0, n - 1] = eos
    mask = np.zeros((1, SEQ), np.int64)
    mask[0, :n] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    if with_types:
        types = np.zeros((1, SEQ), np.int64)
        if n > 6 and rng.random() < 0.6:  # a sentence pair: [CLS] a [SEP] b [SEP]
            cut = int(rng.integers(3, n - 2))
            ids[0, cut - 1] = eos
            types[0, cut:n] = 1
        out["token_type_ids"] = types
    return out


def image_sample(rng, size):
    """A smooth random picture (blobs and gradients) in [0, 1], normalised."""
    lo = rng.random((1, 3, 4, 4)).astype(np.float32)
    img = torch.nn.functional.interpolate(torch.from_numpy(lo), size=(size, size),
                                          mode="bicubic", align_corners=False).numpy()
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    img = img + 0.3 * (rng.random() - 0.5) * (xx + yy)[None, None]
    img = img + 0.04 * rng.standard_normal(img.shape)
    img = np.clip(img, 0, 1).astype(np.float32)
    return {"pixel_values": ((img - MEAN) / STD).astype(np.float32)}


def mel_sample(rng, n_mels, frames):
    """Whisper-style log-mel of a few tones in noise (sr 16 kHz, hop 160)."""
    fe = tf.WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=16000,
                                    hop_length=160, chunk_length=1, n_fft=400)
    sr = 16000
    t = np.arange(int(sr * frames / 100)) / sr
    audio = 0.01 * rng.standard_normal(t.shape)
    for _ in range(int(rng.integers(1, 4))):
        f0 = rng.uniform(100, 3000)
        env = np.clip(np.sin(np.pi * t / t[-1] * rng.uniform(0.5, 3)), 0, 1)
        audio += rng.uniform(0.05, 0.3) * env * np.sin(2 * np.pi * f0 * t)
    feats = fe(audio.astype(np.float32), sampling_rate=sr, return_tensors="np")["input_features"]
    return {"input_features": feats[:, :, :frames].astype(np.float32)}


# ---------------------------------------------------------------- models
def text(vocab, bos, eos, pad, types=False):
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if types else [])
    return names, lambda rng: text_sample(rng, vocab, bos, eos, pad, types)


def bert():
    c = tf.BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=128, max_position_embeddings=64)
    return tf.BertModel(c), ["last_hidden_state", "pooler_output"], text(1000, 101, 102, 0, True)


def distilbert():
    c = tf.DistilBertConfig(vocab_size=1000, dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                            max_position_embeddings=64)
    return tf.DistilBertModel(c), ["last_hidden_state"], text(1000, 101, 102, 0)


def gpt2():
    c = tf.GPT2Config(vocab_size=1000, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                      bos_token_id=999, eos_token_id=999)
    m = tf.GPT2Model(c)
    m.config.use_cache = False
    return m, ["last_hidden_state"], text(1000, 999, 999, 999)


def t5enc():
    c = tf.T5Config(vocab_size=1000, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                    relative_attention_num_buckets=8, relative_attention_max_distance=16,
                    feed_forward_proj="gated-gelu")
    return tf.T5EncoderModel(c), ["last_hidden_state"], text(1000, 5, 1, 0)


def clip_text():
    c = tf.CLIPTextConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=SEQ, bos_token_id=998,
                          eos_token_id=999, pad_token_id=0)
    return tf.CLIPTextModel(c), ["last_hidden_state", "pooler_output"], text(998, 998, 999, 0)


def image(size):
    return ["pixel_values"], lambda rng: image_sample(rng, size)


def vit():
    c = tf.ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=128)
    return tf.ViTModel(c), ["last_hidden_state", "pooler_output"], image(32)


def deit():
    c = tf.DeiTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=128, num_labels=10)
    return tf.DeiTForImageClassificationWithTeacher(c), ["logits"], image(32)


def swin():
    c = tf.SwinConfig(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                      window_size=4, drop_path_rate=0.0)
    return tf.SwinModel(c), ["last_hidden_state", "pooler_output"], image(32)


def segformer():
    c = tf.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[4, 2], hidden_sizes=[16, 32],
                           num_attention_heads=[1, 2], decoder_hidden_size=32, num_labels=5,
                           drop_path_rate=0.0)
    return tf.SegformerForSemanticSegmentation(c), ["logits"], image(64)


def mobilevit():
    c = tf.MobileViTConfig(image_size=64, hidden_sizes=[32, 40, 48],
                           neck_hidden_sizes=[8, 16, 24, 32, 40, 48, 96], num_attention_heads=2,
                           num_labels=10)
    return tf.MobileViTForImageClassification(c), ["logits"], image(64)


def whisper_enc():
    c = tf.WhisperConfig(num_mel_bins=16, d_model=64, encoder_layers=2, encoder_attention_heads=4,
                         encoder_ffn_dim=128, decoder_layers=1, decoder_attention_heads=4,
                         decoder_ffn_dim=128, max_source_positions=50, vocab_size=100,
                         pad_token_id=99, bos_token_id=99, eos_token_id=99, decoder_start_token_id=98)
    enc = tf.WhisperModel(c).get_encoder()
    return enc, ["last_hidden_state"], (["input_features"], lambda rng: mel_sample(rng, 16, 100))


MODELS = {
    "bert": (bert, True), "distilbert": (distilbert, True), "gpt2": (gpt2, True),
    "t5enc": (t5enc, True), "clip_text": (clip_text, True), "vit": (vit, False),
    "deit": (deit, False), "swin": (swin, False), "segformer": (segformer, False),
    "mobilevit": (mobilevit, False), "whisper_enc": (whisper_enc, False),
}


def train_bn(m, gen, names):
    """BatchNorm statistics from a few train-mode passes on realistic data."""
    if not any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.modules()):
        return
    rng = np.random.default_rng(7)
    m.train()
    with torch.no_grad():
        for _ in range(8):
            s = gen(rng)
            m(**{k: torch.from_numpy(s[k]) for k in names})
    m.eval()


def yaml(names, samples):
    shapes = ";".join("x".join(map(str, samples[n].shape)) for n in names)
    fm = ";".join("featuremap" for _ in names)
    return ("model_parameters:\n  onnx_model: model.onnx\n  march: nash-e\n"
            "  working_dir: out\n  output_model_file_prefix: m\n"
            f"input_parameters:\n  input_name: {';'.join(names)}\n"
            f"  input_type_train: {fm}\n  input_type_rt: {fm}\n  input_shape: {shapes}\n"
            f"calibration_parameters:\n  cal_data_dir: {';'.join('calib/' + n for n in names)}\n")


def export(name, out, variants):
    build, is_text = MODELS[name]
    for tag_sfx, opset, dyn in variants(is_text):
        torch.manual_seed(0)
        m, out_keys, (names, gen) = build()
        m.eval()
        train_bn(m, gen, names)
        tag = f"{name}_{tag_sfx}"
        d = os.path.join(out, tag)
        rng = np.random.default_rng(1)
        calib = [gen(rng) for _ in range(N_CALIB)]
        test = [gen(rng) for _ in range(N_TEST)]
        w = Wrap(m, names, out_keys).eval()
        args = tuple(torch.from_numpy(calib[0][n]) for n in names)
        os.makedirs(d, exist_ok=True)
        try:
            with torch.no_grad():
                torch.onnx.export(w, args, os.path.join(d, "model.onnx"), input_names=names,
                                  output_names=out_keys, opset_version=opset, dynamo=dyn)
        except Exception as e:  # record and go on: exporters fail on some models
            print(tag, "EXPORT FAILED", type(e).__name__, str(e).replace("\n", " ")[:200])
            os.rmdir(d) if not os.listdir(d) else None
            continue
        for split, data in (("calib", calib), ("test", test)):
            for n in names:
                os.makedirs(os.path.join(d, split, n), exist_ok=True)
                for k, s in enumerate(data):
                    np.save(os.path.join(d, split, n, f"{k}.npy"), s[n])
        with open(os.path.join(d, "model.yaml"), "w") as f:
            f.write(yaml(names, calib[0]))
        print(tag, "ok", f"{os.path.getsize(os.path.join(d, 'model.onnx')) / 1e6:.1f} MB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/wild_hf")
    ap.add_argument("--no-dynamo", action="store_true")
    ap.add_argument("models", nargs="*")
    a = ap.parse_args()

    def variants(is_text):
        v = [("ts14", 14, False)] if is_text else []
        v.append(("ts", 17, False))
        if not a.no_dynamo:
            v.append(("dynamo", 18, True))
        return v

    for name in MODELS:
        if not a.models or name in a.models:
            export(name, a.out, variants)


if __name__ == "__main__":
    main()
