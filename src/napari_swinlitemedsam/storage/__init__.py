"""Safe files (layer 0, standard library only): atomic writes that a crash cannot leave half
done, shared by the cache, the checkpoints and every writer above."""
