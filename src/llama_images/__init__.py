"""llama-images: build, test and ship llama.cpp server images from one declarative matrix."""
