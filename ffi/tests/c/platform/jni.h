/* Subset of the Android NDK's <jni.h> (C declarations): see README.md. */
#ifndef FEWSTEP_TEST_JNI_H
#define FEWSTEP_TEST_JNI_H
#include <stdint.h>

#define JNIEXPORT __attribute__((visibility("default")))
#define JNICALL

typedef uint8_t jboolean;
typedef int32_t jint;
typedef int64_t jlong;
typedef void *jobject;
typedef jobject jclass;
typedef jobject jstring;

struct JNINativeInterface;
typedef const struct JNINativeInterface *JNIEnv;

struct JNINativeInterface {
    const char *(*GetStringUTFChars)(JNIEnv *, jstring, jboolean *);
    void (*ReleaseStringUTFChars)(JNIEnv *, jstring, const char *);
};
#endif
