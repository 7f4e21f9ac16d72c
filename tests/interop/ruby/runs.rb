# frozen_string_literal: true

# The Rails side of run records and batches (tests/interop/test_runs_ruby.py).
#
#   ruby runs.rb COMMAND --url URL --table TABLE --runs RUNS --batches BATCHES [--id N]
#
#   migrate   read a migration (dj-consumer schema --runs --rails) on stdin and run it up
#   rollback  the same migration, down
#   read      JobRun.find(ID) — the README's model — as JSON
#   cancel    write cancel_requested_at on job ID's record, as a Rails app cancels
#   work-one  Delayed::Worker#run on job ID: a Ruby worker runs one part of a batch
#   finish    DjConsumerBatches.finish_part(--batch-id, --id (the part's index)), 1 processed
#   enqueue-http  Delayed::Job.enqueue HttpSteps.new(steps) for each JSON spec on stdin
#   load      YAML.load_dj(handler) of job ID: its class and instance variables as JSON
#   enqueue-reports  an ActiveJob (perform_later) and a struct job (Delayed::Job.enqueue), both
#             with run_key/owner_id, in queue "py": their ids as JSON

require "json"
require "optparse"
require "logger"
require "active_record"
require "active_job"
require "delayed_job"
require "delayed_job_active_record"
require "active_job/queue_adapters/delayed_job_adapter"
require_relative "dj_consumer_batches"

opts = {}
command = ARGV.shift
OptionParser.new do |o|
  %w[url table runs batches].each { |k| o.on("--#{k} V") { |v| opts[k.to_sym] = v } }
  o.on("--id N", Integer) { |v| opts[:id] = v }
  o.on("--batch-id B") { |v| opts[:batch_id] = v }
end.parse!(ARGV)

ActiveRecord::Base.default_timezone = :utc
ActiveRecord::Base.logger = nil
ActiveRecord::Migration.verbose = false
ActiveRecord::Base.establish_connection(opts.fetch(:url))
Delayed::Job.table_name = opts.fetch(:table)
Delayed::Worker.logger = Logger.new($stderr, level: Logger::WARN)
DjConsumerBatches.batches_table = opts[:batches]

# The README's ActiveRecord model for the runs table.
class JobRun < ActiveRecord::Base
  self.primary_key = "job_id"
  def result_data
    result && JSON.parse(result)
  end

  def finished?
    %w[succeeded failed cancelled].include?(state)
  end
end
JobRun.table_name = opts[:runs] if opts[:runs]

# A batch part, as a Ruby app writes one: it counts its items and finishes its part.
class ImportJob
  attr_reader :batch_id, :batch_index, :items

  def perform
    errors = items.select { |i| i.to_s.start_with?("bad") }.map { |i| { id: i, message: "cannot import #{i}" } }
    DjConsumerBatches.finish_part(batch_id, batch_index, processed: items.size - errors.size,
                                                         errors: errors, job_id: nil)
  end
end

class BatchDone
  def perform; end
end

# The README's multi-step HTTP job, enqueued from Rails and run by dj_consumer's http_steps.
# Its queue ("http") is left out of the Ruby workers' --queues: only Python runs it.
HttpSteps = Struct.new(:steps, :max_attempts) do
  def perform
    raise "HttpSteps runs in dj_consumer (queue http)"
  end
end

ActiveJob::Base.queue_adapter = :delayed_job
ActiveJob::Base.logger = Logger.new(nil)

# Jobs a Rails app hands to Python, whose run records it then reads.
class RunsReportJob < ActiveJob::Base
  def perform(year, options = {})
    raise "RunsReportJob runs in dj_consumer (queue py)"
  end
end

ReportStruct = Struct.new(:year, :run_key, :owner_id) do
  def perform
    raise "ReportStruct runs in dj_consumer (queue py)"
  end
end

case command
when "enqueue-reports"
  active = RunsReportJob.set(queue: "py").perform_later(2026, { "run_key" => "aj-2026", "owner_id" => 7 })
  struct = Delayed::Job.enqueue(ReportStruct.new(2027, "struct-2027", 8), queue: "py")
  puts JSON.generate(active_job: active.provider_job_id, struct: struct.id)
when "migrate", "rollback"
  eval($stdin.read, TOPLEVEL_BINDING, "migration.rb") # rubocop:disable Security/Eval
  CreateDelayedJobRuns.migrate(command == "migrate" ? :up : :down)
  puts JSON.generate(tables: ActiveRecord::Base.connection.tables.sort)
when "read"
  run = JobRun.find(opts.fetch(:id))
  puts JSON.generate(run.attributes.merge("result_data" => run.result_data, "finished" => run.finished?))
when "cancel"
  puts JobRun.where(job_id: opts.fetch(:id)).update_all(cancel_requested_at: Time.now.utc)
when "work-one"
  job = Delayed::Job.find(opts.fetch(:id))
  ok = Delayed::Worker.new.run(job)
  puts JSON.generate(ok: ok, left: Delayed::Job.where(id: job.id).exists?)
when "finish"
  puts JSON.generate(DjConsumerBatches.finish_part(opts.fetch(:batch_id), opts.fetch(:id), processed: 1))
when "enqueue-http"
  # [{"steps": [...]}, …] on stdin, with symbol keys as a Rails app would write them
  ids = JSON.parse($stdin.read, symbolize_names: true).map do |spec|
    Delayed::Job.enqueue(HttpSteps.new(spec[:steps], spec[:max_attempts]), queue: "http").id
  end
  puts JSON.generate(ids)
when "load"
  object = YAML.load_dj(Delayed::Job.find(opts.fetch(:id)).handler)
  puts JSON.generate(class: object.class.name,
                     ivars: object.instance_variables.to_h { |v| [v.to_s.delete("@"), object.instance_variable_get(v)] })
else
  abort "unknown command #{command}"
end
