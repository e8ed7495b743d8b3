"""The domain: the diff model, the prompt contract, the review pipeline, ranking, output formats, the
example schema and dataset formats, records, feedback, ``.revbot.yml``, the secret scrubber, and the
Protocols (``ports``) for what the world must provide. No I/O of its own, no click, no torch at
import; it imports nothing of the project but itself (tests/core/test_architecture.py)."""
