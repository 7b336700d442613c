{
  "targets": [
    {
      "target_name": "blockcopy_libvirt",
      "sources": [
        "native/src/addon.cc",
        "native/src/backup.cc",
        "native/src/calls.cc",
        "native/src/chain.cc",
        "native/src/connection.cc",
        "native/src/event_loop.cc",
        "native/src/events.cc",
        "native/src/lock.cc",
        "native/src/notify.cc",
        "native/src/sink.cc",
        "native/src/storage.cc",
        "native/src/typed_params.cc",
        "native/src/worker.cc",
        "native/src/values.cc"
      ],
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
      ],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter", "<!@(pkg-config --cflags libvirt)"],
      "libraries": ["<!@(pkg-config --libs libvirt)"],
      "defines": ["NAPI_VERSION=8", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"]
    }
  ]
}
