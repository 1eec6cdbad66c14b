"""Media handling: decoding inputs safely, sizing rules, MP4 encoding and muxing."""
