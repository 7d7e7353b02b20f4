{
  "targets": [
    {
      "target_name": "nftables_napi",
      "sources": [
        "native/addon.cc",
        "native/common.cc",
        "native/netns_sync.cc",
        "native/nft_run.cc",
        "native/sockets.cc",
        "native/seqpacket.cc"
      ],
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
      ],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra"],
      "libraries": ["-lnftables", "-lpthread"]
    },
    {
      "target_name": "istio-cni-shim",
      "type": "none",
      "actions": [
        {
          "action_name": "musl_static_shim",
          "inputs": ["native/cni-shim.c"],
          "outputs": ["<(PRODUCT_DIR)/istio-cni-shim"],
          "action": ["musl-gcc", "-std=c11", "-O2", "-Wall", "-Wextra", "-static", "-s", "-o", "<@(_outputs)", "<@(_inputs)"]
        }
      ]
    }
  ]
}
