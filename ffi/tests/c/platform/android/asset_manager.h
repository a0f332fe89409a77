/* Subset of the Android NDK's <android/asset_manager.h>: see ../README.md. */
#ifndef FEWSTEP_TEST_ANDROID_ASSET_MANAGER_H
#define FEWSTEP_TEST_ANDROID_ASSET_MANAGER_H
#include <sys/types.h>

struct AAssetManager;
typedef struct AAssetManager AAssetManager;
struct AAsset;
typedef struct AAsset AAsset;

enum { AASSET_MODE_UNKNOWN = 0, AASSET_MODE_RANDOM = 1, AASSET_MODE_STREAMING = 2, AASSET_MODE_BUFFER = 3 };

AAsset *AAssetManager_open(AAssetManager *mgr, const char *filename, int mode);
int AAsset_openFileDescriptor(AAsset *asset, off_t *outStart, off_t *outLength);
void AAsset_close(AAsset *asset);
#endif
