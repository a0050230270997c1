/* A library a user's volume might hold under a ggml backend's name (libggml-cpu.so, ...): when
   anything loads it, it leaves a mark (/tmp/planted-library-loaded, with the process's name). */
#include <stdio.h>

__attribute__((constructor)) static void loaded(void) {
    char name[256] = "?";
    FILE *comm = fopen("/proc/self/comm", "r");
    if (comm) {
        if (!fgets(name, sizeof name, comm)) name[0] = '\0';
        fclose(comm);
    }
    FILE *mark = fopen("/tmp/planted-library-loaded", "a");
    if (mark) {
        fprintf(mark, "%s", name);
        fclose(mark);
    }
}
