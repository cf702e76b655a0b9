"""The fal queue emulator (`falassets sim`): see README.md in this folder."""
