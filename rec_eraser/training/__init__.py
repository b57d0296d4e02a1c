"""LoRA fine-tuning of an LLM4Rec model: recipes, encoding of instances, the model, training."""
