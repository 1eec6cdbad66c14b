"""The native dialect (docs/spec/video-generation-api.md) and vidq's own routes about the
caller's requests, in the native vocabulary."""
