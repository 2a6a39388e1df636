"""Generation and scoring on a loaded model: the small named steps of the decode loop.

``prefill`` → ``decode_one`` → ``sample`` → stream. Python only decides what to do next
(stop conditions, streaming text, cancellation); the forward pass itself is the prepared
GPU plan of :mod:`doppler.model.transformer`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from doppler.errors import BadRequest, DopplerError
from doppler.model.ops import Sampling
from doppler.model.stops import StopScanner
from doppler.model.transformer import Model
from doppler.tokenizer import Tokenizer
from doppler.worker.protocol import Emit


class ContextFull(DopplerError):
    code = "context_full"


@dataclass
class GenerateOptions:
    max_tokens: int = 256
    sampling: Sampling = field(default_factory=Sampling)
    stop: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: dict[str, Any] | None, softcap: float) -> GenerateOptions:
        """Read the API's options; greedy unless a temperature > 0 is given."""
        raw = raw or {}
        stop = raw.get("stop") or []
        if isinstance(stop, str):
            stop = [stop]
        max_tokens = raw.get("maxTokens", 256)
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise BadRequest(f"maxTokens must be a positive integer, got {max_tokens!r}")
        try:
            sampling = Sampling(
                temperature=float(raw.get("temperature") or 0.0),
                top_k=int(raw.get("topK") or 0),
                top_p=float(raw.get("topP") or 1.0),
                softcap=softcap,
                seed=int(raw.get("seed") or 0),
            )
        except (TypeError, ValueError) as err:
            raise BadRequest(f"bad sampling option: {err}") from err
        if sampling.temperature < 0 or sampling.top_k < 0 or not 0 < sampling.top_p <= 1:
            raise BadRequest("temperature >= 0, topK >= 0 and 0 < topP <= 1 are required")
        return cls(max_tokens, sampling, [str(s) for s in stop])


class Session:
    def __init__(self, model: Model, tokenizer: Tokenizer | None) -> None:
        self.model = model
        self.tokenizer = tokenizer

    def prompt_ids(self, payload: dict[str, Any]) -> list[int]:
        """Token ids from ``{tokenIds}``, ``{text}`` or ``{messages}`` (chat template)."""
        if payload.get("tokenIds") is not None:
            ids = list(payload["tokenIds"])
            vocab = self.model.config.vocab_size
            if not ids or not all(isinstance(i, int) and 0 <= i < vocab for i in ids):
                raise BadRequest(f"tokenIds must be a non-empty list of ids below {vocab}")
            return ids
        if self.tokenizer is None:
            raise BadRequest("this model has no tokenizer: pass {tokenIds: [...]}", "no_tokenizer")
        if payload.get("messages") is not None:
            text = self.tokenizer.apply_chat_template(payload["messages"])
            return self.tokenizer.encode(text, add_special_tokens=False)
        if not isinstance(payload.get("text"), str):
            raise BadRequest("pass text, messages or tokenIds")
        return self.tokenizer.encode(payload["text"])

    def _check_fits(self, count: int) -> None:
        if count > self.model.context_length:
            raise ContextFull(
                f"{count} tokens do not fit the context of {self.model.context_length} tokens "
                "set at load time (load with a larger contextLength, or shorten the prompt)"
            )

    async def generate(self, payload: dict[str, Any], emit: Emit) -> dict[str, Any]:
        options = GenerateOptions.parse(
            payload.get("options"), self.model.config.final_softcap or 0.0
        )
        prompt = self.prompt_ids(payload)
        self._check_fits(len(prompt))
        max_tokens = min(options.max_tokens, self.model.context_length - len(prompt) + 1)
        eos = self.tokenizer.eos_ids if self.tokenizer else set()
        decoder = (
            self.tokenizer.stream_decoder(skip_special_tokens=True) if self.tokenizer else None
        )
        stops = StopScanner(options.stop)
        generated: list[int] = []
        text_parts: list[str] = []
        finish = "length" if max_tokens == options.max_tokens else "context_full"
        started = time.perf_counter()
        first_token_at = started
        if self.model.experts is not None:
            self.model.experts.reset_stats()
        tokens = self.model.generate(prompt, options.sampling, max_tokens)
        try:
            async for token in tokens:
                if not generated:
                    first_token_at = time.perf_counter()
                generated.append(token)
                if token in eos:
                    finish = "stop"
                    break
                piece = stops.push(decoder.push(token)) if decoder else ""
                if piece or decoder is None:
                    text_parts.append(piece)
                    emit({"type": "delta", "text": piece, "tokenIds": [token]})
                if stops.stopped:
                    finish = "stop"
                    break
        finally:
            await tokens.aclose()
        if decoder is not None and not stops.stopped:
            tail = stops.push(decoder.flush()) + stops.flush()
            if tail:
                text_parts.append(tail)
                emit({"type": "delta", "text": tail, "tokenIds": []})
        decode_s = time.perf_counter() - first_token_at
        model = self.model
        stats: dict[str, Any] = {
            "promptTokens": len(prompt),
            "generatedTokens": len(generated),
            "ttftMs": (first_token_at - started) * 1000,
            "prefillTokPerS": len(prompt) / max(first_token_at - started, 1e-9),
            "decodeTokPerS": (len(generated) - 1) / decode_s if decode_s > 0 else 0.0,
            "cpuMsPerToken": 1000 * model.decode_cpu_s / max(model.decode_steps, 1),
            "prefillCpuMs": 1000 * model.prefill_cpu_s,
            "dispatchesPerToken": model.dispatches_per_token,
        }
        if model.experts is not None:
            stats["paging"] = model.experts.report(len(prompt) + len(generated))
        return {
            "text": "".join(text_parts),
            "tokenIds": generated,
            "finishReason": finish,
            "stats": stats,
        }

    async def score(self, payload: dict[str, Any]) -> dict[str, Any]:
        ids = self.prompt_ids(payload)
        if len(ids) < 2:
            raise BadRequest("score needs at least two tokens")
        self._check_fits(len(ids))
        top_k = int(payload.get("topK") or 0)
        rows = await self.model.logits(ids)
        logprobs: list[float] = []
        top: list[list[list[float]]] = []
        for position in range(len(ids) - 1):
            row = rows[position]
            peak = max(row)
            log_total = peak + math.log(math.fsum(math.exp(v - peak) for v in row))
            logprobs.append(row[ids[position + 1]] - log_total)
            if top_k:
                best = sorted(range(len(row)), key=row.__getitem__, reverse=True)[:top_k]
                top.append([[i, row[i]] for i in best])
        result: dict[str, Any] = {
            "tokenIds": ids,
            "logprobs": logprobs,
            "perplexity": math.exp(-math.fsum(logprobs) / len(logprobs)),
        }
        if top_k:
            result["topK"] = top
        if payload.get("returnLogits"):
            result["logits"] = rows
        return result
