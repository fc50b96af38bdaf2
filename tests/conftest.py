import sys
from pathlib import Path

# Test helpers are plain modules beside the tests: tiny_data here, the LDC
# fixture writers in datamodules/test_timit_corpus.py, the search fakes in
# search/test_search_fakes.py.
_TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(_TESTS))
sys.path.insert(0, str(_TESTS / "datamodules"))
sys.path.insert(0, str(_TESTS / "search"))  # test_search_fakes, shared with tests/beacons
