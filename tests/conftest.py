import sys
from pathlib import Path

# Test helpers are plain modules beside the tests: tiny_data here, and the LDC
# fixture writers in datamodules/test_timit_corpus.py.
_TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(_TESTS))
sys.path.insert(0, str(_TESTS / "datamodules"))
