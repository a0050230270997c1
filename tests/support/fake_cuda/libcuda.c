/* Stand-in for libcuda.so.1: the three driver API calls boot's probe makes (llama_runtime/compat.py).
   RESULT is what cuInit returns; VERSION what cuDriverGetVersion reports (12080: CUDA 12.8). */
int cuInit(unsigned int flags) {
    (void)flags;
    return RESULT;
}

int cuDriverGetVersion(int *version) {
    *version = VERSION;
    return 0;
}

int cuGetErrorString(int error, const char **text) {
    *text = error == 804 ? "forward compatibility was attempted on non supported HW" : "unknown error";
    return 0;
}
