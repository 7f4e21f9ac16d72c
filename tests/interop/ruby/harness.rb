# frozen_string_literal: true

# The Ruby side of the interop tests: a pretend Rails app and its delayed_job workers.
#
#   ruby harness.rb COMMAND --url URL --table TABLE [options]
#
#   schema    create TABLE with delayed_job_active_record's own migration template, and
#             TABLE_runs (the side table every job writes to when it performs)
#   enqueue   read a JSON list of jobs on stdin, enqueue them the Rails way, print their ids
#   work      run a Delayed::Worker (start, or --work-off N), as `rake jobs:work` does
#   inspect   print Ruby's view of rows (failed?, attempts, run_at, last_error, name …) as JSON
#   destroy   Delayed::Job.find(ID).destroy, as a Rails console would
#
# URL is an ActiveRecord URL (mysql2://root@127.0.0.1:3306/test, postgresql://…).
# Times are UTC (ActiveRecord default_timezone = :utc), as dj_consumer requires.

require "erb"
require "json"
require "logger"
require "optparse"
require "socket"
require "active_record"
require "active_job"
require "delayed_job"
require "delayed_job_active_record"
require "active_job/queue_adapters/delayed_job_adapter"

HERE = File.expand_path(__dir__)

opts = {
  queues: [], max_run_time: nil, max_attempts: nil, sleep_delay: 0.1,
  exit_on_complete: false, work_off: nil, drain: false, name_prefix: nil, destroy_failed_jobs: false,
  strategy: nil, ids: [], worker_name: nil, python_jobs: nil
}
command = ARGV.shift
OptionParser.new do |o|
  o.on("--url URL") { |v| opts[:url] = v }
  o.on("--table TABLE") { |v| opts[:table] = v }
  o.on("--queues A,B", Array) { |v| opts[:queues] = v }
  o.on("--max-run-time S", Integer) { |v| opts[:max_run_time] = v }
  o.on("--max-attempts N", Integer) { |v| opts[:max_attempts] = v }
  o.on("--sleep-delay S", Float) { |v| opts[:sleep_delay] = v }
  o.on("--exit-on-complete") { opts[:exit_on_complete] = true }
  o.on("--work-off N", Integer) { |v| opts[:work_off] = v }
  o.on("--drain", "with --exit-on-complete: leave only when no ready row is left") { opts[:drain] = true }
  o.on("--name-prefix P") { |v| opts[:name_prefix] = v }
  o.on("--destroy-failed-jobs") { opts[:destroy_failed_jobs] = true }
  o.on("--strategy S") { |v| opts[:strategy] = v.to_sym }
  o.on("--ids A,B", Array) { |v| opts[:ids] = v.map(&:to_i) }
  o.on("--worker-name N") { |v| opts[:worker_name] = v }
  o.on("--[no-]python-jobs", "load the Python-only job classes (default: not for work)") do |v|
    opts[:python_jobs] = v
  end
end.parse!(ARGV)
abort("usage: harness.rb COMMAND --url URL --table TABLE") unless command && opts[:url] && opts[:table]

$stdout.sync = true
$stderr.sync = true
LOG = Logger.new($stderr)
LOG.level = Logger::INFO

ActiveRecord::Base.default_timezone = :utc
ActiveRecord::Base.logger = nil
ActiveRecord::Migration.verbose = false
ActiveRecord::Base.establish_connection(opts[:url])
ActiveJob::Base.queue_adapter = :delayed_job
ActiveJob::Base.logger = Logger.new(nil)

TABLE = opts[:table]
RUNS = "#{TABLE}_runs"
Delayed::Job.table_name = TABLE
Delayed::Job.reset_column_information

require File.join(HERE, "jobs.rb")
JobRun.table_name = RUNS
python_jobs = opts[:python_jobs].nil? ? command != "work" : opts[:python_jobs]
require File.join(HERE, "python_jobs.rb") if python_jobs

Delayed::Worker.logger = LOG
Delayed::Worker.destroy_failed_jobs = opts[:destroy_failed_jobs]
Delayed::Worker.max_run_time = opts[:max_run_time] if opts[:max_run_time]
Delayed::Worker.max_attempts = opts[:max_attempts] if opts[:max_attempts]
if opts[:strategy]
  Delayed::Backend::ActiveRecord.configure { |c| c.reserve_sql_strategy = opts[:strategy] }
end

# Ruby's exit_on_complete leaves as soon as one work_off finds nothing it could lock. With
# the default_sql strategy (read_ahead candidates, then lock one) that also happens when
# other workers took all the candidates first, so a worker can leave a full queue behind.
# For tests that drain a table, --drain keeps working while ready rows remain in its queues.
# (Prepended to the one worker: Delayed::Worker's plugins live on Delayed::Worker.lifecycle,
# so a subclass would lose them.)
module Draining
  def work_off(num = 100)
    loop do
      result = super
      return result if result.sum.positive? || stop? || !self.class.exit_on_complete
      return result unless ready_rows?

      sleep(0.05)
    end
  end

  def ready_rows?
    Delayed::Job.ready_to_run(name, self.class.max_run_time).min_priority.max_priority.for_queues.exists?
  end
end

def iso(time)
  time&.utc&.strftime("%Y-%m-%dT%H:%M:%S.%6N")
end

case command
when "schema"
  # The generator's template, rendered as `rails generate delayed_job:active_record` does,
  # with only the table (and its index) renamed so concurrent tests never share one.
  gem_dir = Gem::Specification.find_by_name("delayed_job_active_record").gem_dir
  template = File.read(File.join(gem_dir, "lib/generators/delayed_job/templates/migration.rb"))
  migration_version = "[#{ActiveRecord::VERSION::MAJOR}.#{ActiveRecord::VERSION::MINOR}]"
  source = ERB.new(template, trim_mode: "-").result(binding)
  source = source.gsub("CreateDelayedJobs", "CreateHarnessDelayedJobs")
                 .gsub('"delayed_jobs_priority"', "\"#{TABLE}_priority\"")
                 .gsub(":delayed_jobs", ":#{TABLE}")
  eval(source, TOPLEVEL_BINDING, "migration.rb") # rubocop:disable Security/Eval
  CreateHarnessDelayedJobs.migrate(:up)
  ActiveRecord::Schema.define do
    create_table RUNS, force: true do |t|
      t.string :job_key, null: false
      t.string :runner, null: false
      t.string :worker
      t.bigint :job_id
      t.integer :attempts
      t.string :note
      t.datetime :created_at, precision: 6
    end
    add_index RUNS, :job_key, name: "#{RUNS}_key"
  end
  puts JSON.generate(table: TABLE, runs: RUNS, adapter: ActiveRecord::Base.connection.adapter_name)

when "enqueue"
  # [{"kind": "struct", "class": "SharedJob", "args": {"key": "k1"}, "queue": "ruby",
  #   "priority": 0, "run_at": "2024-01-01T00:00:00Z", "count": 100, "bulk": false}, …]
  # kinds: struct (Delayed::Job.enqueue Klass.new), delay_class (Klass.delay.meth(*args)),
  # delay_instance (Klass.new(*new_args).delay.meth(*args)), active_job (Klass.perform_later).
  # With "count", "args" values equal to "%{i}" get the index interpolated ("key-%{i}").
  # "bulk": one insert_all of the handlers Psych writes (for 10,000-row tables).
  specs = JSON.parse($stdin.read)
  ids = []
  expand = lambda do |value, i|
    case value
    when String then format(value, i: i)
    when Array then value.map { |v| expand.call(v, i) }
    when Hash then value.transform_values { |v| expand.call(v, i) }
    else value
    end
  end
  specs.each do |spec|
    klass = Object.const_get(spec.fetch("class"))
    count = spec.fetch("count", 1)
    options = {}
    options[:queue] = spec["queue"] if spec.key?("queue")
    options[:priority] = spec["priority"] if spec["priority"]
    options[:run_at] = Time.iso8601(spec["run_at"]) if spec["run_at"]
    make = lambda do |i|
      args = expand.call(spec.fetch("args", {}), i)
      obj = klass.new
      args.each { |k, v| obj[k] = v }
      obj
    end
    if spec["bulk"]
      now = Time.now.utc.change(usec: 0)
      count.times.each_slice(1000) do |slice|
        rows = slice.map do |i|
          { handler: make.call(i).to_yaml, queue: options[:queue], priority: options[:priority] || 0,
            attempts: 0, run_at: now, created_at: now, updated_at: now }
        end
        Delayed::Job.insert_all!(rows)
      end
      next
    end
    ActiveRecord::Base.transaction do
      count.times do |i|
        args = expand.call(spec.fetch("args", []), i)
        job =
          case spec.fetch("kind")
          when "struct" then Delayed::Job.enqueue(make.call(i), **options)
          when "delay_class" then klass.delay(**options).__send__(spec.fetch("method"), *args)
          when "delay_instance"
            receiver = klass.new(*expand.call(spec.fetch("new_args", []), i))
            receiver.delay(**options).__send__(spec.fetch("method"), *args)
          when "active_job"
            aj = (options[:queue] ? klass.set(queue: options[:queue]) : klass).perform_later(*args)
            Delayed::Job.find(aj.provider_job_id)
          else abort("unknown kind #{spec['kind']}")
          end
        ids << job.id
      end
    end
  end
  puts JSON.generate(ids)

when "work"
  worker_opts = { quiet: true, sleep_delay: opts[:sleep_delay], exit_on_complete: opts[:exit_on_complete] }
  worker_opts[:queues] = opts[:queues] if opts[:queues].any?
  worker = Delayed::Worker.new(worker_opts)
  worker.singleton_class.prepend(Draining) if opts[:drain]
  worker.name_prefix = "#{opts[:name_prefix]} " if opts[:name_prefix]
  LOG.info("harness.worker_started name=#{worker.name.inspect} pid=#{Process.pid}")
  if opts[:work_off]
    result = worker.work_off(opts[:work_off])
    Delayed::Job.clear_locks!(worker.name)
    puts JSON.generate(succeeded: result[0], failed: result[1], name: worker.name)
  else
    worker.start
    puts JSON.generate(name: worker.name, stopped: true)
  end

when "inspect"
  scope = opts[:ids].any? ? Delayed::Job.where(id: opts[:ids]) : Delayed::Job.all
  rows = scope.order(:id).map do |job|
    {
      id: job.id, name: job.name, failed: job.failed?, attempts: job.attempts,
      run_at: iso(job.run_at), locked_at: iso(job.locked_at), locked_by: job.locked_by,
      failed_at: iso(job.failed_at), last_error: job.last_error, queue: job.queue,
      priority: job.priority, updated_at: iso(job.updated_at),
      max_attempts: (begin; job.max_attempts; rescue Delayed::DeserializationError; nil; end),
      ready: Delayed::Job.ready_to_run(opts[:worker_name] || "nobody", Delayed::Worker.max_run_time)
                         .where(id: job.id).exists?
    }
  end
  puts JSON.generate(rows)

when "destroy"
  opts[:ids].each { |id| Delayed::Job.find(id).destroy }
  puts JSON.generate(opts[:ids])

else
  abort("unknown command #{command}")
end
