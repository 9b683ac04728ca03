// Token embedding: ids → rows of a [vocab, dim] table (any dtype; rows may span several storage
// bindings — the op windows them).

import { embedding, type Tensor } from "../tensor/mod.ts";
import { Module } from "./module.ts";
import type { Parameter } from "./parameter.ts";

/** HF nn.Embedding. */
export class Embedding extends Module {
  readonly weight: Parameter;

  constructor(readonly numEmbeddings: number, readonly dim: number, std = 0.02) {
    super();
    this.weight = this.param("weight", [numEmbeddings, dim], "embedding", { kind: "normal", std });
  }

  /** ids: i32 [...] → [..., dim] f32. */
  forward(ids: Tensor): Tensor {
    return embedding(ids, this.weight.value);
  }
}
