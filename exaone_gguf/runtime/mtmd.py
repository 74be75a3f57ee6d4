"""llama.cpp's multimodal library (libmtmd, shipped with llama-cpp-python) from Python: load a projector file with
its text model, encode one image, read the image embeddings llama.cpp would feed the text model."""

from __future__ import annotations

import ctypes
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from exaone_gguf.errors import InputError


def _quiet_logs() -> None:
    import llama_cpp
    import llama_cpp.mtmd_cpp as mtmd

    @llama_cpp.llama_log_callback
    def _silent(level, text, user_data):  # noqa: ARG001
        return None

    _quiet_logs.keep = _silent  # the callback must outlive this call
    llama_cpp.llama_log_set(_silent, ctypes.c_void_p(0))
    mtmd.mtmd_helper_log_set(_silent, ctypes.c_void_p(0))


def mtmd_image_embeddings(
    mmproj: Path | str, text_model: Path | str, image: np.ndarray, threads: int = 1
) -> np.ndarray:
    """The image embeddings libmtmd computes for `image` (uint8 [H, W, 3], RGB): float32 [n_tokens, n_embd],
    one row per merged patch in raster order. `text_model` is the text GGUF the projector belongs to (libmtmd
    checks its hidden size against the projector's and tokenizes the prompt around the image with it)."""
    import llama_cpp
    import llama_cpp.mtmd_cpp as mtmd

    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("image must be uint8 [H, W, 3]")
    _quiet_logs()
    with ExitStack() as stack:
        model = _load_text_model(stack, text_model)
        cparams = mtmd.mtmd_context_params_default()
        cparams.use_gpu = False
        cparams.n_threads = threads
        cparams.warmup = False
        cparams.print_timings = False
        ctx = mtmd.mtmd_init_from_file(str(mmproj).encode(), model, cparams)
        if not ctx:
            raise InputError(
                f"{mmproj}: libmtmd could not load this projector with {Path(text_model).name} "
                "(a wrong projector type, missing keys or a hidden size that differs from the text model's)."
            )
        stack.callback(mtmd.mtmd_free, ctx)
        h, w, _ = image.shape
        buf = (ctypes.c_uint8 * image.size).from_buffer_copy(image.tobytes())
        bitmap = mtmd.mtmd_bitmap_init(w, h, buf)
        stack.callback(mtmd.mtmd_bitmap_free, bitmap)
        chunks = mtmd.mtmd_input_chunks_init()
        stack.callback(mtmd.mtmd_input_chunks_free, chunks)
        text = mtmd.mtmd_input_text()
        prompt = mtmd.mtmd_default_marker()
        text.text, text.text_len, text.add_special, text.parse_special = prompt, len(prompt), False, True
        bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
        if mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(text), bitmaps, 1) != 0:
            raise RuntimeError("libmtmd could not tokenize the test image")
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            if mtmd.mtmd_input_chunk_get_type(chunk) != mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                continue
            n_tokens = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
            if mtmd.mtmd_encode_chunk(ctx, chunk) != 0:
                raise RuntimeError("libmtmd failed to encode the test image")
            n_embd = llama_cpp.llama_model_n_embd(model)
            out = mtmd.mtmd_get_output_embd(ctx)
            return np.ctypeslib.as_array(out, shape=(n_tokens * n_embd,)).reshape(n_tokens, n_embd).copy()
        raise RuntimeError("libmtmd produced no image chunk for the test image")


def _byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode table: the 256 single-byte tokens of a byte-level BPE vocabulary."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def write_standin_text_model(path: Path, n_embd: int) -> Path:
    """A one-layer Llama GGUF with a 256-byte vocabulary and hidden size `n_embd`: libmtmd needs a text model to
    load a projector (it checks the hidden size and tokenizes the text around the image) but the image embeddings
    do not depend on it. Used when validate is given the projector without its text file."""
    from gguf import MODEL_ARCH, MODEL_ARCH_NAMES, GGMLQuantizationType, GGUFValueType, Keys

    from exaone_gguf.gguf_io.writer import GGUFPlan, write_gguf

    arch, n_vocab, ff = MODEL_ARCH_NAMES[MODEL_ARCH.LLAMA], 256, 2 * n_embd
    plan = GGUFPlan()
    plan.add_string(Keys.General.ARCHITECTURE, arch)
    plan.add_string(Keys.General.NAME, "exaone-gguf stand-in text model")
    plan.add_u32(Keys.LLM.CONTEXT_LENGTH.format(arch=arch), 4096)
    plan.add_u32(Keys.LLM.EMBEDDING_LENGTH.format(arch=arch), n_embd)
    plan.add_u32(Keys.LLM.FEED_FORWARD_LENGTH.format(arch=arch), ff)
    plan.add_u32(Keys.LLM.BLOCK_COUNT.format(arch=arch), 1)
    plan.add_u32(Keys.Attention.HEAD_COUNT.format(arch=arch), 1)
    plan.add_u32(Keys.Attention.HEAD_COUNT_KV.format(arch=arch), 1)
    plan.add_f32(Keys.Attention.LAYERNORM_RMS_EPS.format(arch=arch), 1e-5)
    plan.add_u32(Keys.General.FILE_TYPE, 0)
    plan.add_string(Keys.Tokenizer.MODEL, "gpt2")
    plan.add_string(Keys.Tokenizer.PRE, "default")
    plan.add_array(Keys.Tokenizer.LIST, GGUFValueType.STRING, _byte_tokens())
    plan.add_array(Keys.Tokenizer.TOKEN_TYPE, GGUFValueType.INT32, [1] * n_vocab)
    plan.add_array(Keys.Tokenizer.MERGES, GGUFValueType.STRING, [])
    plan.add_u32(Keys.Tokenizer.BOS_ID, 0)
    plan.add_u32(Keys.Tokenizer.EOS_ID, 1)
    rng = np.random.default_rng(0)
    shapes = {
        "token_embd.weight": (n_embd, n_vocab),
        "output_norm.weight": (n_embd,),
        "output.weight": (n_embd, n_vocab),
        "blk.0.attn_norm.weight": (n_embd,),
        "blk.0.attn_q.weight": (n_embd, n_embd),
        "blk.0.attn_k.weight": (n_embd, n_embd),
        "blk.0.attn_v.weight": (n_embd, n_embd),
        "blk.0.attn_output.weight": (n_embd, n_embd),
        "blk.0.ffn_norm.weight": (n_embd,),
        "blk.0.ffn_gate.weight": (n_embd, ff),
        "blk.0.ffn_up.weight": (n_embd, ff),
        "blk.0.ffn_down.weight": (ff, n_embd),
    }
    for name, ne in shapes.items():
        data = np.ones(ne[0], np.float32) if len(ne) == 1 else rng.normal(0, 0.02, ne[::-1]).astype(np.float32)
        plan.add_tensor(name, ne, GGMLQuantizationType.F32, lambda d=data: [d])
    write_gguf(plan, path)
    return path


def _load_text_model(stack: ExitStack, text_model: Path | str):
    """llama.cpp's model handle for `text_model` on the CPU, freed when `stack` closes."""
    import llama_cpp

    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = 0
    model = llama_cpp.llama_model_load_from_file(str(text_model).encode(), mparams)
    if not model:
        raise InputError(f"{text_model}: llama.cpp could not load this text model.")
    stack.callback(llama_cpp.llama_model_free, model)
    return model


def mtmd_generate(
    mmproj: Path | str, text_model: Path | str, image: np.ndarray, prompt: str, n_tokens: int, threads: int = 1
) -> tuple[list[int], bool]:
    """A smoke run of the two files together: the image (through libmtmd) and `prompt` into the text model, then
    `n_tokens` greedy tokens. Returns (the tokens, whether every logit row read was finite)."""
    import llama_cpp
    import llama_cpp.mtmd_cpp as mtmd

    image = np.ascontiguousarray(image, dtype=np.uint8)
    _quiet_logs()
    with ExitStack() as stack:
        model = _load_text_model(stack, text_model)
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_threads, cp.n_threads_batch = 1024, 512, 512, threads, threads
        lctx = llama_cpp.llama_init_from_model(model, cp)
        stack.callback(llama_cpp.llama_free, lctx)
        mp = mtmd.mtmd_context_params_default()
        mp.use_gpu, mp.n_threads, mp.warmup, mp.print_timings = False, threads, False, False
        ctx = mtmd.mtmd_init_from_file(str(mmproj).encode(), model, mp)
        if not ctx:
            raise InputError(f"{mmproj}: libmtmd could not load this projector with {Path(text_model).name}.")
        stack.callback(mtmd.mtmd_free, ctx)
        h, w, _ = image.shape
        bitmap = mtmd.mtmd_bitmap_init(w, h, (ctypes.c_uint8 * image.size).from_buffer_copy(image.tobytes()))
        stack.callback(mtmd.mtmd_bitmap_free, bitmap)
        chunks = mtmd.mtmd_input_chunks_init()
        stack.callback(mtmd.mtmd_input_chunks_free, chunks)
        text = mtmd.mtmd_input_text()
        data = (mtmd.mtmd_default_marker().decode() + "\n" + prompt).encode()
        text.text, text.text_len, text.add_special, text.parse_special = data, len(data), True, True
        if mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(text), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1) != 0:
            raise RuntimeError("libmtmd could not tokenize the prompt with the test image")
        n_past = llama_cpp.llama_pos(0)
        if mtmd.mtmd_helper_eval_chunks(ctx, lctx, chunks, 0, 0, cp.n_batch, True, ctypes.byref(n_past)) != 0:
            raise RuntimeError("libmtmd could not evaluate the image and prompt")
        vocab = llama_cpp.llama_model_get_vocab(model)
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        tokens, finite, pos = [], True, n_past.value
        batch = llama_cpp.llama_batch_init(1, 0, 1)
        stack.callback(llama_cpp.llama_batch_free, batch)
        for _ in range(n_tokens):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(lctx, -1), shape=(n_vocab,))
            finite &= bool(np.isfinite(logits).all())
            tok = int(np.argmax(logits))
            tokens.append(tok)
            batch.n_tokens = 1
            batch.token[0], batch.pos[0], batch.n_seq_id[0], batch.seq_id[0][0], batch.logits[0] = tok, pos, 1, 0, True
            if llama_cpp.llama_decode(lctx, batch) != 0:
                break
            pos += 1
        return tokens, finite
