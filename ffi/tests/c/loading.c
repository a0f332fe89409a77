/*
 * loading.c: the three ways to load a model (path, bytes, file descriptor)
 * give the same model; a descriptor is borrowed (stays open, position
 * unmoved) and may point into a bigger file (an APK asset); every bad
 * descriptor, offset and length is a status with a message. Run by
 * ffi/tests/c_api.rs (also under valgrind).
 *
 *   loading MODEL WORKDIR
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fewstep.h"

#include "check.h"

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    long n;
    unsigned char *buf;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Two images of seed 5 as RGB8; 0 on success. */
static int render(const fewstep_model *m, unsigned char *px, size_t len) {
    fewstep_request req;
    fewstep_request_init(&req);
    req.batch = 2;
    req.seed = 5;
    req.threads = 1;
    return fewstep_generate_rgb8(m, &req, px, len) == FEWSTEP_OK ? 0 : 1;
}

int main(int argc, char **argv) {
    fewstep_model *by_path = NULL, *by_bytes = NULL, *by_fd = NULL, *m = NULL;
    unsigned char *want = NULL, *got = NULL;
    size_t px_len = 0, model_len = 0;
    unsigned char *model_bytes;
    char bundle[4096], dir_path[4096];
    const char prefix[] = "APK-HEADER-BYTES-BEFORE-THE-ASSET";
    const char suffix[] = "AND-SOME-AFTER";
    int fd, pipefd[2];
    FILE *f;
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL WORKDIR\n", argv[0]);
        return 2;
    }
    model_bytes = read_file(argv[1], &model_len);
    CHECK(model_bytes != NULL && model_len > 0, "read the model file");
    if (!model_bytes) return 1;

    EXPECT(fewstep_model_load(argv[1], &by_path), FEWSTEP_OK, "load from a path");
    EXPECT(fewstep_rgb8_len(by_path, 2, &px_len), FEWSTEP_OK, "rgb8 length");
    want = malloc(px_len);
    got = malloc(px_len);
    CHECK(want != NULL && got != NULL, "allocate the pixel buffers");
    if (!want || !got) return 1;
    CHECK(render(by_path, want, px_len) == 0, "generate from the path-loaded model");

    EXPECT(fewstep_model_load_bytes(model_bytes, model_len, &by_bytes), FEWSTEP_OK, "load from bytes");
    /* The library keeps none of the bytes: scribble over them and free. */
    memset(model_bytes, 0xAB, model_len);
    CHECK(render(by_bytes, got, px_len) == 0 && memcmp(want, got, px_len) == 0,
          "bytes-loaded model, bytes overwritten after the call: same images");

    /* A whole file by descriptor, length 0 = to the end. */
    fd = open(argv[1], O_RDONLY);
    CHECK(fd >= 0, "open the model");
    CHECK(lseek(fd, 7, SEEK_SET) == 7, "move the descriptor's position");
    EXPECT(fewstep_model_load_fd(fd, 0, 0, &by_fd), FEWSTEP_OK, "load from a descriptor");
    CHECK(lseek(fd, 0, SEEK_CUR) == 7, "the descriptor's position did not move");
    CHECK(fcntl(fd, F_GETFD) != -1, "the descriptor is still open");
    close(fd);
    CHECK(render(by_fd, got, px_len) == 0 && memcmp(want, got, px_len) == 0,
          "descriptor-loaded model, descriptor closed: same images");

    /* The model inside a bigger file, as an uncompressed APK asset is. */
    free(model_bytes);
    model_bytes = read_file(argv[1], &model_len);
    snprintf(bundle, sizeof bundle, "%s/bundle.bin", argv[2]);
    f = fopen(bundle, "wb");
    CHECK(f != NULL, "create the bundle");
    if (!f) return 1;
    fwrite(prefix, 1, sizeof prefix, f);
    fwrite(model_bytes, 1, model_len, f);
    fwrite(suffix, 1, sizeof suffix, f);
    fclose(f);
    fd = open(bundle, O_RDONLY);
    EXPECT(fewstep_model_load_fd(fd, sizeof prefix, model_len, &m), FEWSTEP_OK,
           "load a region of a bigger file (offset, length)");
    CHECK(m && render(m, got, px_len) == 0 && memcmp(want, got, px_len) == 0, "region-loaded model: same images");
    fewstep_model_free(m);
    m = (fewstep_model *)1;
    EXPECT(fewstep_model_load_fd(fd, sizeof prefix, 0, &m), FEWSTEP_ERROR_INVALID_MODEL,
           "region to the end takes the trailing bytes too: not a valid model");
    CHECK(m == NULL, "*out is NULL after a failed load");
    EXPECT(fewstep_model_load_fd(fd, sizeof prefix, model_len / 2, &m), FEWSTEP_ERROR_INVALID_MODEL,
           "half the model: not a valid model");
    EXPECT(fewstep_model_load_fd(fd, 0, model_len, &m), FEWSTEP_ERROR_INVALID_MODEL,
           "wrong offset: not a valid model");
    EXPECT(fewstep_model_load_fd(fd, sizeof prefix, model_len + sizeof suffix + 1, &m), FEWSTEP_ERROR_IO,
           "length past the end of the file");
    CHECK(strstr(fewstep_last_error(), "bytes") != NULL, "the message gives the file's size");
    EXPECT(fewstep_model_load_fd(fd, UINT64_MAX, 0, &m), FEWSTEP_ERROR_IO, "offset past the end");
    EXPECT(fewstep_model_load_fd(fd, UINT64_MAX, UINT64_MAX, &m), FEWSTEP_ERROR_IO, "offset + length overflows");
    EXPECT(fewstep_model_load_fd(fd, sizeof prefix + model_len + sizeof suffix, 0, &m), FEWSTEP_ERROR_INVALID_MODEL,
           "offset at the end: nothing to read");
    EXPECT(fewstep_model_load_fd(fd, 0, 0, NULL), FEWSTEP_ERROR_NULL_ARGUMENT, "out NULL");
    close(fd);

    /* Descriptors that are not a readable file. */
    EXPECT(fewstep_model_load_fd(-1, 0, 0, &m), FEWSTEP_ERROR_INVALID_ARGUMENT, "fd -1");
    EXPECT(fewstep_model_load_fd(INT32_MIN, 0, 0, &m), FEWSTEP_ERROR_INVALID_ARGUMENT, "fd INT32_MIN");
    EXPECT(fewstep_model_load_fd(fd, 0, 0, &m), FEWSTEP_ERROR_IO, "a closed descriptor");
    EXPECT(fewstep_model_load_fd(INT32_MAX, 0, 0, &m), FEWSTEP_ERROR_IO, "a descriptor never opened");
    snprintf(dir_path, sizeof dir_path, "%s", argv[2]);
    fd = open(dir_path, O_RDONLY);
    EXPECT(fewstep_model_load_fd(fd, 0, 0, &m), FEWSTEP_ERROR_IO, "a directory");
    close(fd);
    CHECK(pipe(pipefd) == 0, "make a pipe");
    EXPECT(fewstep_model_load_fd(pipefd[0], 0, 0, &m), FEWSTEP_ERROR_IO, "a pipe, to its end");
    CHECK(strstr(fewstep_last_error(), "length") != NULL, "the message asks for a length");
    EXPECT(fewstep_model_load_fd(pipefd[0], 0, 16, &m), FEWSTEP_ERROR_IO, "a pipe with a length (no positional reads)");
    close(pipefd[0]);
    close(pipefd[1]);
    fd = open(argv[1], O_WRONLY);
    EXPECT(fewstep_model_load_fd(fd, 0, 0, &m), FEWSTEP_ERROR_IO, "a write-only descriptor");
    close(fd);
    CHECK(m == NULL, "no model from any failure");

    fewstep_model_free(by_path);
    fewstep_model_free(by_bytes);
    fewstep_model_free(by_fd);
    free(model_bytes);
    free(want);
    free(got);
    printf("%d failures\n", failures);
    return failures != 0;
}
