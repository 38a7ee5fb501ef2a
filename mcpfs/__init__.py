"""mcpfs: one FUSE tree over IPFS, MFS, S3, Hugging Face, Filecoin and Storacha."""

__version__ = "0.1.0"
