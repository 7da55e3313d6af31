"""sspo.reward inside a Ray actor's thread pool, as verl's reward loop calls it (run_in_executor threads)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_compute_score_in_ray_actor_threads_with_time_bound():
    import ray
    from helpers import private_ray

    @ray.remote(num_cpus=0)
    class Scorer:
        def score_in_threads(self, calls):
            from concurrent.futures import ThreadPoolExecutor

            from sspo.reward import compute_score, warmup
            from sspo.reward.math_verify_pool import get_pool

            assert warmup(4, timeout=120)  # four workers up, one per thread: no call waits for a busy worker
            # verl's NaiveRewardManager: loop.run_in_executor(None, compute_score...) -> non-main threads
            with ThreadPoolExecutor(max_workers=4) as ex:
                outs = list(ex.map(lambda c: compute_score("math", c[0], c[1], timeout=c[2]), calls))
            return outs, get_pool().timeouts

    with private_ray(num_cpus=1):  # its own Ray, whatever RAY_ADDRESS or /tmp/ray on this machine name
        scorer = Scorer.options(runtime_env={"env_vars": {"SSPO_REWARD_WORKERS": "4"}}).remote()
        calls = [
            (r"so \boxed{(3,\pi/2)}", r"\left( 3, \frac{\pi}{2} \right)", 20.0),  # math-verify, equal
            (r"\boxed{(x+1)^{990} - (x+2)^{990}}", "42", 1.0),  # overruns: killed at the bound
            (r"\boxed{\frac{1}{3}}", r"\frac{1}{2}", 20.0),
            (r"\boxed{2\sqrt{2}}", r"\sqrt{8}", 20.0),
            ("no answer", "4", 20.0),
        ]
        outs, timeouts = ray.get(scorer.score_in_threads.remote(calls), timeout=240)
    assert [o["score"] for o in outs] == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert outs[1]["pred"] == "(x+1)^{990} - (x+2)^{990}"
    assert timeouts == 1
