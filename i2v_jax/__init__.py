"""i2v-jax: image-to-video ReID by mutual discriminative knowledge transfer."""
