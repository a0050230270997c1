/* Stand-in for the release's libggml-cuda.so: the test adds its GPU code (.nv_fatbin). */
int ggml_backend_cuda_stand_in(void) { return 0; }
