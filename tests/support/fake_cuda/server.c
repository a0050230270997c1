/* Stand-in for the release's llama-server: answers --version and --list-devices like it (the
   list is $FAKE_LIST_DEVICES when set: what a real one printed on some host), and otherwise
   prints what it was started with (CUDA's kernel cache, the library path, its working directory),
   then $FAKE_OUTPUT when set (what a real one printed before it failed) and fails as ggml does
   (abort), or exits 1 (it serves nothing). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *given(const char *name) {
    const char *value = getenv(name);
    return value ? value : "(unset)";
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        puts("version: 11669 (release tarball)");
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--list-devices") == 0) {
        const char *listed = getenv("FAKE_LIST_DEVICES");
        puts(listed ? listed : "Available devices:\n  (none)");
        return 0;
    }
    char cwd[4096];
    printf("fake llama-server: CUDA_CACHE_PATH=%s\n", given("CUDA_CACHE_PATH"));
    printf("fake llama-server: LD_LIBRARY_PATH=%s\n", given("LD_LIBRARY_PATH"));
    printf("fake llama-server: cwd=%s\n", getcwd(cwd, sizeof cwd) ? cwd : "(unknown)");
    const char *output = getenv("FAKE_OUTPUT");
    if (output) {
        puts(output);
        fflush(stdout);
        abort();
    }
    fflush(stdout);
    return 1;
}
