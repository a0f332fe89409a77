/* Subset of the Android NDK's <android/bitmap.h>: see ../README.md. */
#ifndef FEWSTEP_TEST_ANDROID_BITMAP_H
#define FEWSTEP_TEST_ANDROID_BITMAP_H
#include <stdint.h>
#include <jni.h>

enum { ANDROID_BITMAP_RESULT_SUCCESS = 0 };

enum AndroidBitmapFormat {
    ANDROID_BITMAP_FORMAT_NONE = 0,
    ANDROID_BITMAP_FORMAT_RGBA_8888 = 1,
    ANDROID_BITMAP_FORMAT_A_8 = 8,
};

typedef struct {
    uint32_t width;
    uint32_t height;
    uint32_t stride;
    int32_t format;
    uint32_t flags;
} AndroidBitmapInfo;

int AndroidBitmap_getInfo(JNIEnv *env, jobject jbitmap, AndroidBitmapInfo *info);
int AndroidBitmap_lockPixels(JNIEnv *env, jobject jbitmap, void **addrPtr);
int AndroidBitmap_unlockPixels(JNIEnv *env, jobject jbitmap);
#endif
