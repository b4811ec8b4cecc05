"""The model library: the image tower (`image_encoder`: a ResNet trunk), the projection `head`, `clip` (both
joined against frozen text embeddings), the contrastive `loss` and the retrieval `metrics`. nn.Modules and
tensor math; nothing of ours but the format layer's constants."""
