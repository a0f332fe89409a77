/* Subset of the Android NDK's <android/asset_manager_jni.h>: see ../README.md. */
#ifndef FEWSTEP_TEST_ANDROID_ASSET_MANAGER_JNI_H
#define FEWSTEP_TEST_ANDROID_ASSET_MANAGER_JNI_H
#include <jni.h>
#include <android/asset_manager.h>

AAssetManager *AAssetManager_fromJava(JNIEnv *env, jobject assetManager);
#endif
