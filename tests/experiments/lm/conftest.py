import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _lm_cache(tmp_path_factory):
    """Tokenized corpora for the tests go to a temporary cache, built once per session."""
    old = os.environ.get("SEEDNORM_CACHE")
    os.environ["SEEDNORM_CACHE"] = str(tmp_path_factory.mktemp("seednorm-cache"))
    yield
    if old is None:
        os.environ.pop("SEEDNORM_CACHE", None)
    else:
        os.environ["SEEDNORM_CACHE"] = old
