"""Unsharded model -> serving bundle (torch.export dense part, safetensors tables, manifest)."""
