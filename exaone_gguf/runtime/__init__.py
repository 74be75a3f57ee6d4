"""A GGUF running in llama.cpp (through llama-cpp-python and its libraries): logits, MoE routes, libmtmd's image
embeddings and generation. Validation judges what these return; nothing here judges."""
