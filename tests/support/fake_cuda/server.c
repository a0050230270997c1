/* Stand-in for the release's llama-server: answers --version and --list-devices like it, and
   otherwise prints the CUDA kernel cache it was given, then fails (it serves nothing). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        puts("version: 11669 (release tarball)");
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--list-devices") == 0) {
        puts("Available devices:\n  (none)");
        return 0;
    }
    const char *cache = getenv("CUDA_CACHE_PATH");
    printf("fake llama-server: CUDA_CACHE_PATH=%s\n", cache ? cache : "(unset)");
    fflush(stdout);
    return 1;
}
