// Training: run a stage from code as `cli/train.ts` does.
//
// ```ts
// import { train } from "./mod.ts";
// const { finalDir } = await train.trainFromArgv(["--stage", "1", "--data_path", "shapes",
//   "--vision_model_name_or_path", "google/siglip2-base-patch16-224", "--max_steps", "20"]);
// ```

export {
  argsFromArgv,
  type RunOptions,
  type RunResult,
  type RunStatus,
  runTraining,
  trainFromArgv,
} from "./trainer.ts";
export {
  finalizeArgs,
  FLAGS,
  parseTrainArgs,
  RESUME_KEYS,
  type TrainArgs,
  trainHelp,
} from "./args.ts";
export type {
  BatchSource,
  Stage,
  StageContext,
  StageData,
  StageModel,
  StagePlan,
} from "./stage.ts";
export { stageFor } from "./stages.ts";
export { SupervisedStage } from "./supervised.ts";
export {
  EvalLossCallback,
  GenEvalCallback,
  type TrainerCallback,
  type TrainerView,
} from "./callbacks.ts";
export {
  type LossModel,
  type LossOutput,
  type StepBatch,
  StepRunner,
  type StepStats,
} from "./step.ts";
export { AdamW } from "./optimizer.ts";
export { LrSchedule } from "./schedule.ts";
