"""Request handlers for the model API: ``load``, ``generate`` (also chat), ``score``, ``unload``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from doppler.errors import BadRequest, DopplerError
from doppler.gpu.budget import GpuBudget
from doppler.model.loader import load_model
from doppler.model.session import Session
from doppler.model.transformer import PagingOptions, build_model
from doppler.tokenizer import Tokenizer
from doppler.worker.protocol import Emit

if TYPE_CHECKING:
    from doppler.worker.main import Worker


class NoModel(DopplerError):
    code = "no_model"


def handlers(worker: Worker) -> dict[str, Any]:
    state: dict[str, Any] = {"session": None, "budget": None, "info": None}

    def release() -> None:
        """Drop the model and free every GPU buffer charged to it."""
        if state["budget"] is not None:
            state["budget"].destroy_remaining()
        state.update(session=None, budget=None, info=None)

    def session() -> Session:
        if state["session"] is None:
            raise NoModel("no model is loaded: call load(manifestUrl) first")
        return state["session"]

    async def load(payload: dict[str, Any], emit: Emit) -> dict[str, Any]:
        if not isinstance(payload, dict) or not isinstance(payload.get("url"), str):
            raise BadRequest("load needs {url}")
        gpu, pipelines = worker.require_gpu()
        release()
        budget = GpuBudget(gpu.device, int(payload.get("gpuBudgetBytes") or gpu.default_budget))
        state["budget"] = budget
        paging = PagingOptions(
            ram_budget=int(payload.get("ramBudgetBytes") or 0),
            policy=str(payload.get("pagingPolicy") or "cycle-lfu"),
        )
        try:
            loaded = await load_model(payload["url"], gpu, budget, emit)
            model = await build_model(
                loaded,
                gpu,
                budget,
                pipelines,
                payload.get("contextLength"),
                paging,
                emit,
                payload.get("prefillTokens"),
            )
        except BaseException:
            release()
            raise
        tokenizer = Tokenizer.from_spec(loaded.tokenizer_spec) if loaded.tokenizer_spec else None
        state["session"] = Session(model, tokenizer)
        config = loaded.manifest.config
        state["info"] = {
            "modelId": loaded.model_id,
            "name": loaded.manifest.name,
            "arch": config.arch,
            "params": loaded.manifest.param_count,
            "vocabSize": config.vocab_size,
            "contextLength": model.context_length,
            "prefillTokens": model.prefill[-1].act.n,
            "hasTokenizer": tokenizer is not None,
            "gpuBytes": dict(budget.used),
            "splitTensors": sorted(n for n, w in loaded.weights.items() if len(w.parts) > 1),
        }
        if model.experts is not None:
            state["info"]["experts"] = model.experts.report(0)
        return state["info"]

    async def generate(payload: dict[str, Any], emit: Emit) -> dict[str, Any]:
        return await session().generate(payload or {}, emit)

    async def score(payload: dict[str, Any], _emit: Emit) -> dict[str, Any]:
        return await session().score(payload or {})

    async def profile(payload: dict[str, Any], _emit: Emit) -> dict[str, Any]:
        """GPU time of one decode step and of one prefill pass, by kernel (each dispatch in
        a pass of its own) and whole (one pass, as generation runs them): a diagnostic."""
        model = session().model
        gpu, _ = worker.require_gpu()
        if not gpu.has("timestamp-query"):
            raise DopplerError("this GPU has no timestamp-query feature", "unsupported")
        repeats = int((payload or {}).get("repeats") or 10)
        device = gpu.device
        by_kernel = await model.decode.plan.profile(device, repeats)
        for kernel, ms in (await model.sampler.profile(device, repeats)).items():
            by_kernel[kernel] = by_kernel.get(kernel, 0.0) + ms
        decode_pass = await model.decode.plan.pass_ms(device, repeats)
        prefill = model.prefill[-1]
        return {
            "gpuMsPerToken": sum(by_kernel.values()),
            "byKernel": by_kernel,
            "decodePassMs": decode_pass + await model.sampler.pass_ms(device, repeats),
            "prefillPassMs": await prefill.plan.pass_ms(device, repeats),  # the long plan
            "prefillTokens": prefill.act.n,
            "prefillByKernel": await prefill.plan.profile(device, repeats),
            "prompt": await model.time_prompt(list((payload or {}).get("tokenIds") or [1] * 512)),
        }

    async def unload(_payload: Any, _emit: Emit) -> dict[str, bool]:
        from doppler_js import storage  # type: ignore[import-not-found]

        had = state["session"] is not None
        release()
        storage.releaseModel()  # the model's cache entry may be evicted or deleted now
        return {"unloaded": had}

    return {
        "load": load,
        "generate": generate,
        "score": score,
        "unload": unload,
        "profile": profile,
    }
