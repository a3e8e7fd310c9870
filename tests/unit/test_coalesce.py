"""The fused graph's batching (mlsys.serve.coalesce): the callers of one event-loop turn, one call."""

import asyncio

import pytest

from mlsys.serve.coalesce import Coalescer


def _recording(fail_key=None):
    calls = []

    def score(keys, items):
        calls.append(list(items))
        if fail_key == "all":
            raise RuntimeError("the model raised")
        return [RuntimeError(f"version {k} raised") if k == fail_key else i * 10 for k, i in zip(keys, items)]

    return calls, score


def test_the_callers_of_one_turn_are_one_call_and_each_gets_its_own_results_in_order():
    calls, score = _recording()
    coalescer = Coalescer(score, max_callers=16)

    async def main():
        together = await asyncio.gather(coalescer.submit(["a"], [1]), coalescer.submit(["a", "a"], [2, 3]),
                                        coalescer.submit(["b"], [4]))
        alone = await coalescer.submit(["a"], [5])  # a later turn: its own call, scored without waiting for others
        return together, alone

    together, alone = asyncio.run(main())
    assert together == [[10], [20, 30], [40]] and alone == [50]
    assert calls == [[1, 2, 3, 4], [5]]


def test_more_callers_than_max_callers_are_scored_in_further_calls_of_the_same_turn():
    calls, score = _recording()
    coalescer = Coalescer(score, max_callers=2)

    async def main():
        return await asyncio.gather(*(coalescer.submit(["a"], [i]) for i in range(5)))

    assert asyncio.run(main()) == [[0], [10], [20], [30], [40]]
    assert calls == [[0, 1], [2, 3], [4]]


def test_a_failing_item_fails_only_its_caller_and_a_raising_call_fails_every_caller_of_it():
    _, score = _recording(fail_key="bad")
    coalescer = Coalescer(score, max_callers=16)

    async def main():
        return await asyncio.gather(coalescer.submit(["good"], [1]), coalescer.submit(["bad"], [2]),
                                    coalescer.submit(["good", "bad"], [3, 4]), return_exceptions=True)

    ok, bad, mixed = asyncio.run(main())
    assert ok == [10] and isinstance(bad, RuntimeError) and "version bad" in str(mixed)

    _, raising = _recording(fail_key="all")
    coalescer = Coalescer(raising, max_callers=16)

    async def main_all():
        return await asyncio.gather(coalescer.submit(["a"], [1]), coalescer.submit(["a"], [2]), return_exceptions=True)

    assert all(isinstance(r, RuntimeError) and "model raised" in str(r) for r in asyncio.run(main_all()))


def test_a_cancelled_caller_is_skipped_and_the_others_are_answered():
    calls, score = _recording()
    coalescer = Coalescer(score, max_callers=16)

    async def main():
        gone = asyncio.ensure_future(coalescer.submit(["a"], [1]))
        stays = asyncio.ensure_future(coalescer.submit(["a"], [2]))
        await asyncio.sleep(0)  # both are pending now
        gone.cancel()
        return await stays, gone

    result, gone = asyncio.run(main())
    assert result == [20] and gone.cancelled()
    with pytest.raises(ValueError, match="max_callers"):
        Coalescer(score, max_callers=0)
