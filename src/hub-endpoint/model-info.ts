// GET /api/models/{repo}[/revision/{revision}]: what the hub says of a model
// at a revision, from the served install's manifest.
import type { ListedModel } from "./served-model.js";

export interface ModelInfo {
  id: string;
  modelId: string;
  sha: string;
  siblings: { rfilename: string; size: number }[];
  private: false;
}

export function modelInfo(served: ListedModel): ModelInfo {
  const repo = served.record.source;
  return {
    id: repo,
    modelId: repo,
    sha: served.commit,
    siblings: served.files.map((file) => ({ rfilename: file.path, size: file.sizeBytes })),
    private: false,
  };
}
