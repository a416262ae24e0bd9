"""Builders: the only place configuration becomes ``nn.Module``s."""
