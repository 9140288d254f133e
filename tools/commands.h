// The elastic command's subcommands; each lives in its own cmd_*.cpp.
#pragma once

namespace elastic::cli {

// Each returns the process exit code; argv[0] is the subcommand name.
int cmd_inspect(int argc, char** argv);
int cmd_tokenize(int argc, char** argv);
int cmd_detokenize(int argc, char** argv);
int cmd_logits(int argc, char** argv);
int cmd_generate(int argc, char** argv);
int cmd_chat(int argc, char** argv);
int cmd_route(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_pretrain(int argc, char** argv);
int cmd_demo(int argc, char** argv);
int cmd_train_router(int argc, char** argv);
int cmd_train_step(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_calibrate(int argc, char** argv);
int cmd_serve(int argc, char** argv);

}  // namespace elastic::cli
