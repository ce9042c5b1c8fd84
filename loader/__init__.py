"""clipshards.loader: stream clip shards as torchvision's (video, audio, label) tuples."""

__all__: list[str] = []
